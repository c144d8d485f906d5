#!/usr/bin/env node
// Rich-text interop: Tiptap's schema (`getSchema([StarterKit])` from
// @tiptap/core 3.31.3) and y-prosemirror 1.3.7 against a Quire server,
// on the Y.XmlFragment named `default` (what Tiptap's Collaboration binds).
//
//   node rich.mjs <serverUrl> <scenario> <room> [arg]
//
//   write   <json>     writes a ProseMirror JSON document (a file path, or
//                      `sample`) into the room as y-prosemirror does, waits
//                      until a second connection sees it; reports the JSON
//   read    [expect]   reads the room's fragment as ProseMirror JSON and checks
//                      it with `schema.nodeFromJSON(json).check()`; with
//                      `expect` (a substring of the JSON text) waits for it
//   check   <file>     (no server) checks a JSON document file against the schema
//   edit    <rounds>   a Tiptap-schema client: applies ProseMirror transactions
//                      (typing, bold) and syncs them the way y-prosemirror's sync
//                      plugin does, while taking in remote changes; then waits
//                      until the text settles and reports the JSON
//   caret   <spec>     spec = JSON {name, pos, watch, holdMs}: publishes a cursor at
//                      ProseMirror position `pos` (y-prosemirror's cursor field),
//                      waits to see the cursor of user `watch`, reports where it
//                      is as ProseMirror positions, stays for holdMs
//   relay              a writer's y-prosemirror update with link marks reaches a
//                      reader; reports the bytes sent and received (base64) and
//                      both sides' JSON text as each lists it
//
// Exit 0 with a last stdout line {"ok":true,...}; else exit 1 with {"ok":false,"error":...}.

import * as fs from 'node:fs'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { getSchema } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import { EditorState, TextSelection } from '@tiptap/pm/state'
import {
  updateYFragment, yXmlFragmentToProsemirrorJSON, initProseMirrorDoc,
  absolutePositionToRelativePosition, relativePositionToAbsolutePosition
} from 'y-prosemirror'

const WAIT_MS = 15_000
const OVERALL_MS = 90_000
const [serverUrl, scenario, room, arg] = process.argv.slice(2)
const schema = getSchema([StarterKit])
const providers = []
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor (what, cond, seen) {
  const start = Date.now()
  for (;;) {
    if (cond()) return
    if (Date.now() - start > WAIT_MS) throw new Error(`timed out waiting for ${what}; seen: ${JSON.stringify(seen ? seen() : null).slice(0, 800)}`)
    await sleep(20)
  }
}

function client (name) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(serverUrl, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true, maxBackoffTime: 500 })
  providers.push(provider)
  return { name, doc, provider, fragment: doc.getXmlFragment('default') }
}

async function synced (...cs) {
  for (const c of cs) await waitFor(`${c.name} synced`, () => c.provider.synced)
}

const SAMPLE = {
  type: 'doc',
  content: [
    { type: 'heading', attrs: { level: 1 }, content: [{ type: 'text', text: 'Project plan' }] },
    {
      type: 'paragraph',
      content: [
        { type: 'text', text: 'Plain, ' },
        { type: 'text', text: 'bold', marks: [{ type: 'bold' }] },
        { type: 'text', text: ', ' },
        { type: 'text', text: 'italic', marks: [{ type: 'italic' }] },
        { type: 'text', text: ', ' },
        { type: 'text', text: 'under', marks: [{ type: 'underline' }] },
        { type: 'text', text: ', ' },
        { type: 'text', text: 'struck', marks: [{ type: 'strike' }] },
        { type: 'text', text: ', ' },
        { type: 'text', text: 'code', marks: [{ type: 'code' }] },
        { type: 'text', text: ' and ' },
        { type: 'text', text: 'a link', marks: [{ type: 'link', attrs: { href: 'https://tiptap.dev/' } }] },
        { type: 'hardBreak' },
        { type: 'text', text: 'after a break' }
      ]
    },
    { type: 'heading', attrs: { level: 2 }, content: [{ type: 'text', text: 'Steps' }] },
    {
      type: 'bulletList',
      content: [
        { type: 'listItem', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'one' }] }] },
        {
          type: 'listItem',
          content: [
            { type: 'paragraph', content: [{ type: 'text', text: 'two' }] },
            { type: 'orderedList', attrs: { start: 3 }, content: [{ type: 'listItem', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'nested' }] }] }] }
          ]
        }
      ]
    },
    { type: 'blockquote', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'A quote.' }] }] },
    { type: 'codeBlock', attrs: { language: 'js' }, content: [{ type: 'text', text: 'let x = 1;\nx += 1;' }] },
    { type: 'horizontalRule' },
    { type: 'paragraph' }
  ]
}

function checked (json) {
  const node = schema.nodeFromJSON(json)
  node.check()
  return node
}

const meta = () => ({ mapping: new Map(), isOMark: new Map() })

// JSON text with every object's keys sorted: two replicas hold the same
// document when these are equal (yrs keeps a mark's attrs in hash order, so
// what comes back through a Quire server can list them in another order).
const canonical = (value) => JSON.stringify(value, (_, v) =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
    : v)

async function write () {
  const json = arg === 'sample' ? SAMPLE : JSON.parse(fs.readFileSync(arg, 'utf8'))
  const node = checked(json)
  const a = client('writer')
  await synced(a)
  updateYFragment(a.doc, a.fragment, node, meta())
  const b = client('reader')
  await synced(b)
  await waitFor('a second connection to see the document', () => canonical(yXmlFragmentToProsemirrorJSON(b.fragment)) === canonical(yXmlFragmentToProsemirrorJSON(a.fragment)), () => yXmlFragmentToProsemirrorJSON(b.fragment))
  return { json: yXmlFragmentToProsemirrorJSON(b.fragment) }
}

async function read () {
  const a = client('reader')
  await synced(a)
  if (arg) await waitFor(`the document to contain ${arg}`, () => JSON.stringify(yXmlFragmentToProsemirrorJSON(a.fragment)).includes(arg), () => yXmlFragmentToProsemirrorJSON(a.fragment))
  const json = yXmlFragmentToProsemirrorJSON(a.fragment)
  checked(json)
  return { json, text: schema.nodeFromJSON(json).textBetween(0, schema.nodeFromJSON(json).content.size, '\n') }
}

function check () {
  const json = JSON.parse(fs.readFileSync(arg, 'utf8'))
  checked(json)
  return { json }
}

// A Tiptap-like client: a ProseMirror state bound to the fragment with
// y-prosemirror's own functions (what its sync plugin does on every change).
async function edit () {
  const rounds = Number(arg || 20)
  const c = client('tiptap')
  await synced(c)
  const binding = meta()
  let state = EditorState.create({ schema, doc: initProseMirrorDoc(c.fragment, schema).doc })
  const fromY = () => {
    const { doc, meta: m } = initProseMirrorDoc(c.fragment, schema)
    binding.mapping = m.mapping
    state = EditorState.create({ schema, doc })
  }
  let applyingLocal = false
  c.fragment.observeDeep(() => { if (!applyingLocal) fromY() })
  const toY = (tr) => {
    state = state.apply(tr)
    applyingLocal = true
    c.doc.transact(() => updateYFragment(c.doc, c.fragment, state.doc, binding), 'tiptap')
    applyingLocal = false
  }
  for (let i = 0; i < rounds; i++) {
    // Type at the end of the first text block, and make every third word bold.
    let end = null
    state.doc.descendants((n, pos) => { if (end === null && n.isTextblock) end = pos + 1 + n.content.size; return end === null })
    if (end === null) {
      toY(state.tr.insert(0, schema.nodes.paragraph.create()))
      continue
    }
    const word = `tt${i} `
    let tr = state.tr.setSelection(TextSelection.create(state.doc, end)).insertText(word, end)
    if (i % 3 === 0) tr = tr.addMark(end, end + word.length - 1, schema.marks.bold.create())
    toY(tr)
    await sleep(30)
  }
  // Settle: the same JSON for a while.
  let last = ''
  let stableSince = Date.now()
  const start = Date.now()
  while (Date.now() - stableSince < 1500) {
    const now = JSON.stringify(yXmlFragmentToProsemirrorJSON(c.fragment))
    if (now !== last) { last = now; stableSince = Date.now() }
    if (Date.now() - start > WAIT_MS) break
    await sleep(50)
  }
  const json = yXmlFragmentToProsemirrorJSON(c.fragment)
  checked(json)
  return { json }
}

async function caret () {
  const spec = JSON.parse(arg)
  const c = client(spec.name)
  await synced(c)
  await waitFor('content to place the cursor in', () => c.fragment.length > 0)
  const { doc, mapping } = initProseMirrorDoc(c.fragment, schema)
  const pos = Math.min(spec.pos, doc.content.size)
  const rel = absolutePositionToRelativePosition(pos, c.fragment, mapping)
  c.provider.awareness.setLocalStateField('user', { name: spec.name, color: '#c2571a' })
  c.provider.awareness.setLocalStateField('cursor', { anchor: rel, head: rel })
  let seen = null
  if (spec.watch) {
    await waitFor(`the cursor of ${spec.watch}`, () => {
      for (const [id, s] of c.provider.awareness.getStates()) {
        if (id === c.doc.clientID || !s.user || s.user.name !== spec.watch || !s.cursor) continue
        const { mapping: m } = initProseMirrorDoc(c.fragment, schema)
        const anchor = relativePositionToAbsolutePosition(c.doc, c.fragment, Y.createRelativePositionFromJSON(s.cursor.anchor), m)
        const head = relativePositionToAbsolutePosition(c.doc, c.fragment, Y.createRelativePositionFromJSON(s.cursor.head), m)
        if (anchor !== null && head !== null) seen = { anchor, head, raw: s.cursor }
      }
      return seen !== null
    }, () => [...c.provider.awareness.getStates().values()])
  }
  await sleep(spec.holdMs || 0)
  return { pos, seen, doc: doc.toJSON() }
}

// What y-prosemirror writes reaches another stock client byte for byte:
// the writer's one update (a paragraph with a link whose attrs Tiptap lists
// as href, target, rel, class, title) is what the reader receives, and the
// reader's JSON lists the attrs in the same order (yrs keeps a map value's
// keys in hash order, so a re-encoded relay would reorder them).
const LINKED = {
  type: 'doc',
  content: [{
    type: 'paragraph',
    content: [
      { type: 'text', text: 'see ' },
      { type: 'text', text: 'the site', marks: [{ type: 'link', attrs: { href: 'https://tiptap.dev/', target: '_blank', rel: 'noopener noreferrer nofollow', class: 'external', title: 'Tiptap' } }] },
      { type: 'text', text: ' and ' },
      { type: 'text', text: 'this', marks: [{ type: 'bold' }, { type: 'link', attrs: { href: '/local', target: null, rel: null, class: null, title: 'here' } }] }
    ]
  }]
}

async function relay () {
  const a = client('writer')
  const b = client('reader')
  await synced(a, b)
  const sent = []
  const received = []
  a.doc.on('update', (update, origin) => { if (origin !== a.provider) sent.push(Buffer.from(update).toString('base64')) })
  b.doc.on('update', (update, origin) => { if (origin === b.provider) received.push(Buffer.from(update).toString('base64')) })
  a.doc.transact(() => updateYFragment(a.doc, a.fragment, checked(LINKED), meta()), 'tiptap')
  const json = (c) => JSON.stringify(yXmlFragmentToProsemirrorJSON(c.fragment))
  await waitFor('the reader to hold the document', () => canonical(yXmlFragmentToProsemirrorJSON(b.fragment)) === canonical(yXmlFragmentToProsemirrorJSON(a.fragment)), () => yXmlFragmentToProsemirrorJSON(b.fragment))
  return { sent, received, writer: json(a), reader: json(b) }
}

const scenarios = { write, read, check, edit, caret, relay }

async function main () {
  const run = scenarios[scenario]
  if (!run) {
    console.log(JSON.stringify({ ok: false, error: `unknown scenario ${scenario}` }))
    process.exit(2)
  }
  const timer = setTimeout(() => { console.log(JSON.stringify({ ok: false, scenario, error: 'overall timeout' })); process.exit(1) }, OVERALL_MS)
  try {
    const result = await run()
    clearTimeout(timer)
    for (const p of providers) p.destroy()
    console.log(JSON.stringify({ ok: true, scenario, room, ...result }))
    process.exit(0)
  } catch (err) {
    console.error(err && err.stack ? err.stack : String(err))
    console.log(JSON.stringify({ ok: false, scenario, room, error: String(err && err.message ? err.message : err) }))
    process.exit(1)
  }
}

main()
