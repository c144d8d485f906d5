//! The private servers themselves: fresh ports, their own data, restarts
//! that keep data, `kill -9`, and nothing left behind.

use quire_tests::services::{Postgres, Redis};

#[test]
fn postgres_runs_on_a_private_port_and_keeps_data_across_restart_and_kill() {
    let mut pg = Postgres::start().expect("start postgres");
    assert_ne!(pg.port(), 5432, "never the default port");
    assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
    pg.psql(
        "postgres",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1)",
    )
    .unwrap();

    pg.restart().expect("restart");
    assert_eq!(pg.psql("postgres", "SELECT sum(v) FROM t").unwrap(), "1");

    pg.psql("postgres", "INSERT INTO t VALUES (2)").unwrap();
    pg.kill();
    assert!(!pg.is_running());
    assert!(
        pg.psql("postgres", "SELECT 1").is_err(),
        "down after kill -9"
    );
    pg.start_again().expect("start after kill -9");
    assert_eq!(
        pg.psql("postgres", "SELECT sum(v) FROM t").unwrap(),
        "3",
        "committed rows survive kill -9"
    );

    let url = pg.create_database("other").unwrap();
    assert!(url.ends_with("/other"));

    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "the instance folder is removed on drop");
}

#[test]
fn two_postgres_instances_are_independent() {
    let a = Postgres::start().expect("start a");
    let b = Postgres::start().expect("start b");
    assert_ne!(a.port(), b.port());
    a.psql("postgres", "CREATE TABLE only_in_a (v int)")
        .unwrap();
    assert!(b.psql("postgres", "SELECT * FROM only_in_a").is_err());
}

#[test]
fn redis_runs_on_a_private_port_with_an_append_only_file() {
    let mut redis = Redis::start().expect("start redis");
    assert_ne!(redis.port(), 6379, "never the default port");
    assert_eq!(redis.command(&["SET", "k", "v1"]).unwrap(), "+OK\r\n");

    redis.restart().expect("restart");
    assert_eq!(redis.command(&["GET", "k"]).unwrap(), "$2\r\nv1\r\n");
    assert!(redis.dir().join("appendonlydir").is_dir());

    redis.kill();
    assert!(!redis.is_running());
    assert!(redis.command(&["PING"]).is_err(), "down after kill -9");
    redis.start_again().expect("start after kill -9");
    assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG\r\n");

    let dir = redis.dir().to_path_buf();
    drop(redis);
    assert!(!dir.exists(), "the instance folder is removed on drop");
}

#[test]
fn postgres_in_a_kept_folder_keeps_its_data_and_names_a_folder_it_cannot_reach() {
    use std::os::unix::fs::PermissionsExt;
    // A 0700 folder of root's: the postgres account cannot enter it.
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = parent.path().join("pg");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let refused = Postgres::start_in(&data).expect_err("unreachable folder");
        assert!(refused.to_string().contains("cannot enter"), "{refused}");
    }
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    {
        let pg = Postgres::start_in(&data).expect("start in a kept folder");
        pg.psql("postgres", "CREATE TABLE kept (v int)").unwrap();
    }
    assert!(data.join("data/PG_VERSION").exists(), "kept after drop");
    let pg = Postgres::start_in(&data).expect("start again on the same folder");
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM kept").unwrap(),
        "0"
    );
}
