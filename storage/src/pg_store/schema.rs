//! The database schema and its migrations.
//!
//! `quire_schema` lists the migrations applied, one row per version.
//! [`migrate`] runs at every [`PgStore::open`](super::PgStore::open) under
//! a transaction-scoped advisory lock, so nodes starting together apply
//! each migration exactly once and a node never sees half a schema. A
//! database whose schema is newer than this build knows is refused.
//!
//! # Tables (version 1)
//!
//! - `quire_docs(name, bytes, updates, modified_ms)`: one row per document.
//!   A document exists iff it has a row. The figures are exact: every
//!   transaction that adds or removes log rows adjusts them in the same
//!   transaction, and the row's lock orders writers of one document.
//! - `quire_updates(doc, seq, data)`: the update log. `seq` comes from the
//!   sequence `quire_seq`, shared by all documents and nodes.
//! - `quire_chat(doc, seq, data)`: chat messages, seqs from `quire_seq`.
//! - `quire_batches(writer, batch, at)`: the number of the last batch each
//!   writer (store instance) committed, written in the batch's own
//!   transaction: how a retry tells whether a batch whose COMMIT reply was
//!   lost did commit, and how `load` tells which of its own queued appends
//!   a snapshot already holds.
//! - `quire_writers`: a sequence handing out writer ids.

use tokio_postgres::Client;

use super::{LOCK_CLASS, db_error};
use crate::StoreError;

/// One step of the schema, applied once, in order.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "documents, update log, chat, commit records",
    sql: "
        CREATE TABLE quire_docs (
            name        text PRIMARY KEY,
            bytes       bigint NOT NULL,
            updates     bigint NOT NULL,
            modified_ms bigint NOT NULL
        );
        CREATE SEQUENCE quire_seq AS bigint;
        CREATE TABLE quire_updates (
            doc  text   NOT NULL REFERENCES quire_docs (name) ON DELETE CASCADE,
            seq  bigint NOT NULL,
            data bytea  NOT NULL,
            PRIMARY KEY (doc, seq)
        );
        CREATE TABLE quire_chat (
            doc  text   NOT NULL REFERENCES quire_docs (name) ON DELETE CASCADE,
            seq  bigint NOT NULL,
            data bytea  NOT NULL,
            PRIMARY KEY (doc, seq)
        );
        CREATE TABLE quire_batches (
            writer bigint PRIMARY KEY,
            batch  bigint NOT NULL,
            at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE SEQUENCE quire_writers AS bigint;
    ",
}];

/// The newest schema version this build knows.
pub(super) fn newest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema up to date; returns the versions it applied.
pub(super) async fn migrate(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("starting the migration"))?;
    // Key (LOCK_CLASS, 0): no document's compaction lock uses objid 0 with
    // this class except by a hash collision, which would only make a
    // migration wait for a compaction.
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({LOCK_CLASS}, 0);
         CREATE TABLE IF NOT EXISTS quire_schema (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(db_error("creating the schema table"))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM quire_schema", &[])
        .await
        .map_err(db_error("reading the schema version"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if let Some(&newer) = applied.iter().find(|&&v| v > newest_version()) {
        return Err(StoreError::Io(format!(
            "the database has schema version {newer}, newer than this Quire knows ({}); \
             upgrade Quire",
            newest_version()
        )));
    }
    let mut done = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        tx.batch_execute(migration.sql)
            .await
            .map_err(db_error(format_args!(
                "applying schema version {}",
                migration.version
            )))?;
        tx.execute(
            "INSERT INTO quire_schema (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(db_error("recording the schema version"))?;
        done.push(migration.version);
    }
    tx.commit()
        .await
        .map_err(db_error("committing the migration"))?;
    Ok(done)
}
