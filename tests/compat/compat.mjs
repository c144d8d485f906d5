#!/usr/bin/env node
// Compatibility check: drives the stock npm `y-websocket` client against a
// running y-websocket-protocol server (Quire) and verifies one scenario.
//
//   node compat.mjs <serverUrl> <scenario> <room> [text]
//
//   serverUrl  e.g. ws://127.0.0.1:PORT/ws  (the client appends "/<room>")
//   scenario   converge | awareness | reconnect | catchup | write | readonly | relayed | idle
//   room       document name; use a fresh one per scenario run
//   text       `write`: text to append (required)
//              `catchup`: optional substring the synced text must contain
//              `readonly`: a read-only access token (sent as ?token=)
//
// Exit 0 and a final stdout line {"ok":true,"scenario":...,"room":...,"text":...}
// on success. On failure: message on stderr, a final stdout line
// {"ok":false,"scenario":...,"error":...} and exit code 1 (2 for usage errors).
//
// Every provider is created with `disableBc: true`: Node 20 has a global
// BroadcastChannel, and without this two providers in one process would sync
// with each other directly instead of through the server.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const WAIT_MS = 10_000 // bound for every individual wait
const OVERALL_MS = 60_000 // hard bound for the whole run
const POLL_MS = 20

const USAGE = 'usage: node compat.mjs <serverUrl> <scenario> <room> [text]\n' +
  '  scenarios: converge | awareness | reconnect | catchup [expectedSubstring] | write <text> | readonly <token> | relayed | idle'

const [serverUrl, scenario, room, extra] = process.argv.slice(2)

/** @type {WebsocketProvider[]} */
const providers = []

class CompatError extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const show = (v) => {
  try {
    const s = typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v, (_k, x) => x instanceof Map ? Object.fromEntries(x) : x)
    return s !== undefined && s.length > 600 ? s.slice(0, 600) + '…' : s
  } catch {
    return String(v)
  }
}

/**
 * Poll `cond` until it returns true or WAIT_MS passes.
 * @param {string} what  description of the expected condition
 * @param {() => boolean} cond
 * @param {() => any} seen  what was actually observed (for the failure message)
 */
async function waitFor (what, cond, seen, timeoutMs = WAIT_MS) {
  const start = Date.now()
  for (;;) {
    if (cond()) return
    if (Date.now() - start >= timeoutMs) {
      throw new CompatError(`timed out after ${timeoutMs} ms waiting for: ${what}\n  seen: ${show(seen())}`)
    }
    await sleep(POLL_MS)
  }
}

/** Condition must stay false for `ms` (used to prove an edit is really offline). */
async function assertStaysFalse (what, cond, seen, ms) {
  const start = Date.now()
  while (Date.now() - start < ms) {
    if (cond()) throw new CompatError(`unexpected: ${what}\n  seen: ${show(seen())}`)
    await sleep(POLL_MS)
  }
}

function makeClient (name, params = {}) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    maxBackoffTime: 500,
    params
  })
  providers.push(provider)
  const log = []
  const note = (s) => { log.push(s); if (log.length > 20) log.shift() }
  provider.on('status', ({ status }) => note(`status:${status}`))
  provider.on('connection-error', (ev) => note(`error:${ev && (ev.message || ev.type)}`))
  provider.on('connection-close', (ev) => note(`close:${ev ? ev.code + (ev.reason ? ' ' + ev.reason : '') : 'local'}`))
  provider.on('closed', (ev) => note(`closed-permanently:${ev.code} ${ev.reason}`))
  provider.on('sync', (s) => note(`sync:${s}`))
  const text = doc.getText('content')
  return { name, doc, provider, text, log, str: () => text.toString() }
}

async function waitSynced (...clients) {
  for (const c of clients) {
    await waitFor(`client ${c.name} to be synced with ${c.provider.url}`,
      () => c.provider.synced,
      () => ({ synced: c.provider.synced, wsconnected: c.provider.wsconnected, events: c.log }))
  }
}

const count = (haystack, needle) => haystack.split(needle).length - 1

/** Wait until all clients have identical text containing each piece exactly once. */
async function waitConverged (clients, pieces) {
  const ok = () => {
    const first = clients[0].str()
    return clients.every((c) => c.str() === first) &&
      pieces.every((p) => count(first, p) === 1)
  }
  await waitFor(
    `clients ${clients.map((c) => c.name).join(',')} to have equal text containing each of ${show(pieces)} exactly once`,
    ok,
    () => Object.fromEntries(clients.map((c) => [c.name, {
      text: c.str(),
      counts: Object.fromEntries(pieces.map((p) => [p, count(c.str(), p)])),
      synced: c.provider.synced,
      events: c.log
    }]))
  )
  return clients[0].str()
}

// ---------------------------------------------------------------- scenarios

async function converge () {
  const a = makeClient('A')
  const b = makeClient('B')
  await waitSynced(a, b)
  const pieces = []
  // Round 1: truly concurrent - both edit in the same tick, before either
  // has seen anything from the other.
  for (let i = 0; i < 5; i++) {
    const pa = `alpha${i} `
    const pb = `beta${i} `
    a.text.insert(0, pa)
    b.text.insert(b.text.length, pb)
    pieces.push(pa, pb)
  }
  // Round 2: interleaved across ticks while updates are in flight.
  for (let i = 5; i < 10; i++) {
    const pa = `alpha${i} `
    const pb = `beta${i} `
    a.text.insert(0, pa)
    await sleep(3)
    b.text.insert(b.text.length, pb)
    pieces.push(pa, pb)
    await sleep(2)
  }
  return waitConverged([a, b], pieces)
}

async function awareness () {
  const b = makeClient('B')
  await waitSynced(b)
  const annState = { user: { name: 'ann' } }
  const expectState = JSON.stringify(annState)

  // Phase 1: stock client behaviour - provider.destroy() (sends a null
  // awareness state for itself, then closes the socket).
  const a1 = makeClient('A1')
  a1.provider.awareness.setLocalState(annState)
  await waitSynced(a1)
  const id1 = a1.doc.clientID
  await waitFor(`B to see A1 (clientID ${id1}) with state ${expectState}`,
    () => JSON.stringify(b.provider.awareness.getStates().get(id1)) === expectState,
    () => b.provider.awareness.getStates())
  a1.provider.destroy()
  await waitFor(`A1 (clientID ${id1}) to disappear from B's awareness after A1's provider was destroyed`,
    () => !b.provider.awareness.getStates().has(id1),
    () => b.provider.awareness.getStates())

  // Phase 2: abrupt disconnect - the socket is dropped without the client
  // sending a null state, so only the server can announce the removal
  // (within 10 s; the 30 s awareness timeout must not be what removes it).
  const a2 = makeClient('A2')
  a2.provider.awareness.setLocalState(annState)
  await waitSynced(a2)
  const id2 = a2.doc.clientID
  await waitFor(`B to see A2 (clientID ${id2}) with state ${expectState}`,
    () => JSON.stringify(b.provider.awareness.getStates().get(id2)) === expectState,
    () => b.provider.awareness.getStates())
  a2.provider.shouldConnect = false // no auto-reconnect
  a2.provider.ws.terminate() // drop the TCP connection, no close frame, no goodbye message
  await waitFor(`server to announce removal of A2 (clientID ${id2}) to B after A2's connection dropped`,
    () => !b.provider.awareness.getStates().has(id2),
    () => b.provider.awareness.getStates())
  a2.provider.destroy()
  return b.str()
}

async function reconnect () {
  const a = makeClient('A')
  const b = makeClient('B')
  await waitSynced(a, b)
  a.text.insert(0, 'start ')
  await waitConverged([a, b], ['start '])

  a.provider.disconnect()
  await waitFor('A to be disconnected', () => !a.provider.wsconnected && a.provider.ws === null,
    () => ({ wsconnected: a.provider.wsconnected, events: a.log }))
  a.text.insert(a.text.length, 'offline-a ')
  b.text.insert(0, 'online-b ')
  // Prove the edits really did not cross while A was offline.
  await assertStaysFalse('an edit crossed while A was disconnected',
    () => a.str().includes('online-b') || b.str().includes('offline-a'),
    () => ({ A: a.str(), B: b.str() }), 300)

  a.provider.connect()
  await waitSynced(a)
  return waitConverged([a, b], ['start ', 'offline-a ', 'online-b '])
}

async function catchup () {
  const c = makeClient('C')
  await waitSynced(c)
  if (extra !== undefined) {
    // Synced means sync step 2 arrived, so the server's state is applied.
    if (!c.str().includes(extra)) {
      throw new CompatError(`after sync, expected text to contain ${show(extra)}\n  seen: ${show(c.str())}`)
    }
  }
  return c.str()
}

async function write () {
  if (extra === undefined) throw new CompatError('scenario `write` needs a 4th argument: the text to append')
  const w = makeClient('W')
  await waitSynced(w)
  const before = w.str()
  w.text.insert(w.text.length, extra)
  const expected = w.str()
  // A second, independent doc/connection proves the server has the edit.
  const r = makeClient('R')
  await waitSynced(r)
  await waitFor(`a second connection to see the written text ${show(expected)}`,
    () => r.str() === w.str() && r.str() === expected,
    () => ({ writer: w.str(), reader: r.str(), before, readerEvents: r.log }))
  return r.str()
}

// A client with a read-only token (passed as ?token= through `params`, as
// y-websocket apps do) syncs, then tries to write. The Rust side checks that
// the server neither applied nor relayed nor stored the change; here we
// check the client stays connected (no reconnect loop) and can see the text.
async function readonly () {
  if (extra === undefined) throw new CompatError('scenario `readonly` needs a 4th argument: the token')
  const r = makeClient('R', { token: extra })
  await waitSynced(r)
  const seen = r.str()
  r.text.insert(r.text.length, ' [intruder]')
  await assertStaysFalse('the read-only client to be disconnected',
    () => !r.provider.wsconnected, () => ({ events: r.log }), 1500)
  return seen
}

// A stock client gets text by another way than the server (as a second tab
// would over BroadcastChannel: applied with the provider as origin, so it
// is not sent), then types after it. Its update refers to blocks the
// server lacks; the server asks again (sync step 1), the client's step 2
// brings both, and a second connection sees the whole text.
async function relayed () {
  const a = makeClient('A')
  await waitSynced(a)
  const elsewhere = new Y.Doc()
  elsewhere.getText('content').insert(0, 'from another tab')
  Y.applyUpdate(a.doc, Y.encodeStateAsUpdate(elsewhere), a.provider)
  a.text.insert(a.text.length, ', typed after it')
  const expected = a.str()
  const r = makeClient('R')
  await waitSynced(r)
  await waitFor(`a second connection to see ${show(expected)}`,
    () => r.str() === expected,
    () => ({ writer: a.str(), reader: r.str(), writerEvents: a.log, readerEvents: r.log }))
  return r.str()
}

// A stock client alone in a quiet room stays connected. y-websocket closes
// a socket on which no message arrived for 30 s (messageReconnectTimeout)
// and cannot see WebSocket pings; the server echoes its presence renewals
// (every 15 s) back to it, as the Yjs reference server does. Idle for
// IDLE_MS; the socket must never have closed or reopened.
const IDLE_MS = 35_000

async function idle () {
  const a = makeClient('A')
  await waitSynced(a)
  // Any status change or close from here on is a reconnect.
  const events = []
  a.provider.on('status', ({ status }) => events.push(`status:${status}`))
  a.provider.on('connection-close', (ev) => events.push(`close:${ev ? ev.code : 'local'}`))
  a.text.insert(0, 'alone')
  const socket = a.provider.ws
  await sleep(IDLE_MS)
  if (events.length !== 0 || a.provider.ws !== socket || !a.provider.wsconnected) {
    throw new CompatError(`the idle client's socket closed or reopened within ${IDLE_MS} ms\n  seen: ${show({ events, log: a.log, sameSocket: a.provider.ws === socket })}`)
  }
  return a.str()
}

const scenarios = { converge, awareness, reconnect, catchup, write, readonly, relayed, idle }

// ---------------------------------------------------------------- main

function finish (code, line) {
  for (const p of providers) {
    try { p.destroy() } catch {}
  }
  process.stdout.write(JSON.stringify(line) + '\n', () => process.exit(code))
  // in case the write callback never fires
  setTimeout(() => process.exit(code), 1000).unref()
}

async function main () {
  if (!serverUrl || !scenario || !room || !(scenario in scenarios)) {
    console.error(USAGE)
    process.exit(2)
  }
  if (!/^wss?:\/\//.test(serverUrl)) {
    console.error(`serverUrl must start with ws:// or wss://, got ${show(serverUrl)}\n${USAGE}`)
    process.exit(2)
  }
  const watchdog = setTimeout(() => {
    console.error(`compat[${scenario}]: FAILED: overall timeout of ${OVERALL_MS} ms exceeded`)
    finish(1, { ok: false, scenario, room, error: `overall timeout ${OVERALL_MS} ms` })
  }, OVERALL_MS)
  try {
    const text = await scenarios[scenario]()
    clearTimeout(watchdog)
    finish(0, { ok: true, scenario, room, text })
  } catch (e) {
    clearTimeout(watchdog)
    const msg = e instanceof CompatError ? e.message : (e && e.stack) || String(e)
    console.error(`compat[${scenario}] room=${room} server=${serverUrl}: FAILED: ${msg}`)
    finish(1, { ok: false, scenario, room, error: String(e && e.message) })
  }
}

process.on('unhandledRejection', (e) => {
  console.error(`compat[${scenario}]: FAILED: unhandled rejection: ${(e && e.stack) || e}`)
  finish(1, { ok: false, scenario, room, error: `unhandled rejection: ${e && e.message}` })
})

main()
