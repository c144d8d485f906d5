#!/usr/bin/env node
// Writes real updates of the stock npm Yjs client as fixtures for the
// server's update walk (tests/tests/server/update_walk.rs runs this).
//
//   node updates.mjs <outDir>
//
// Writes <outDir>/<n>.bin, one update each, and <outDir>/manifest.json: a
// list of scenarios, each a sequence of steps applied in order to one fresh
// document:
//
//   { "scenario": name, "roots": { rootName: "text"|"map"|"array"|"xml" },
//     "steps": [ { "file", "contains", "expect", "refusal"?, "content"? } ] }
//
// `expect` is "applied" (the walk passes, the update is complete against the
// steps before it, and afterwards the document's roots render as `content`),
// "incomplete" (it refers to what the steps before it do not hold) or
// "refused" (a refusal Quire documents; `refusal` is part of its reason).
// `content` is rendered by Yjs itself from a document that applied the same
// updates, in the canonical form `render` below describes; the Rust test
// renders yrs' document the same way.
//
// Every writer has a fixed client ID, so the fixtures are the same on every
// run. Exit 0 on success; anything else is a failure of the script itself.

import * as Y from 'yjs'
import fs from 'node:fs'
import path from 'node:path'

const [outDir] = process.argv.slice(2)
if (!outDir) {
  console.error('usage: node updates.mjs <outDir>')
  process.exit(2)
}
fs.mkdirSync(outDir, { recursive: true })

// ---------------------------------------------------------------------------
// Canonical rendering. Strings, booleans and null stay as they are; every
// other value is a one-key object naming what it is, so that yrs' values
// (which know fewer JavaScript types) can be rendered into the same shape:
//
//   { "undefined": true }, { "num": "<exact integer>" }, { "float": "<JS>" },
//   { "bytes": [..] }, { "array": [..] }, { "object": {..} },
//   { "doc": { guid, autoLoad } },
//   { "ytext": delta, "attributes": {..} }, { "yarray": [..] }, { "ymap": {..} },
//   { "xmlFragment": [..] }, { "xmlElement": name, "attributes", "children" },
//   { "xmlText": delta, "attributes": {..} }
//
// A delta is [{ "insert": value, "attributes"?: {..} }]. Integral numbers
// are exact decimal strings (yrs keeps integers as i64, Yjs as doubles or
// bigints); other numbers as JavaScript prints them.

const number = (x) => Number.isInteger(x) ? { num: BigInt(x).toString() } : { float: String(x) }

const entries = (object) => Object.fromEntries(Object.entries(object).map(([k, v]) => [k, render(v)]))

const delta = (text) => text.toDelta().map(({ insert, attributes }) =>
  attributes === undefined ? { insert: render(insert) } : { insert: render(insert), attributes: entries(attributes) })

function render (v) {
  if (v === undefined) return { undefined: true }
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return v
  if (typeof v === 'number') return number(v)
  if (typeof v === 'bigint') return { num: v.toString() }
  if (v instanceof Uint8Array) return { bytes: Array.from(v) }
  if (Array.isArray(v)) return { array: v.map(render) }
  // Not its `meta`: yrs reads a subdocument's meta and drops it.
  if (v instanceof Y.Doc) return { doc: { guid: v.guid, autoLoad: v.autoLoad } }
  if (v instanceof Y.XmlText) return { xmlText: delta(v), attributes: entries(v.getAttributes()) }
  if (v instanceof Y.XmlElement) {
    return { xmlElement: v.nodeName, attributes: entries(v.getAttributes()), children: v.toArray().map(render) }
  }
  if (v instanceof Y.XmlFragment) return { xmlFragment: v.toArray().map(render) }
  if (v instanceof Y.Text) return { ytext: delta(v) }
  if (v instanceof Y.Array) return { yarray: v.toArray().map(render) }
  if (v instanceof Y.Map) return { ymap: entries(Object.fromEntries(v.entries())) }
  if (typeof v === 'object') return { object: entries(v) }
  throw new Error(`cannot render ${typeof v}`)
}

const ROOT = {
  text: (doc, name) => doc.getText(name),
  map: (doc, name) => doc.getMap(name),
  array: (doc, name) => doc.getArray(name),
  xml: (doc, name) => doc.getXmlFragment(name)
}

const renderRoots = (doc, roots) =>
  Object.fromEntries(Object.entries(roots).map(([name, kind]) => [name, render(ROOT[kind](doc, name))]))

// ---------------------------------------------------------------------------
// Recording.

const manifest = []
let files = 0

const writeUpdate = (update) => {
  const file = `${files++}.bin`
  fs.writeFileSync(path.join(outDir, file), update)
  return file
}

/**
 * A scenario: `build` records steps; every "applied" step is also applied to
 * a Yjs mirror document, which renders the expected content after it.
 */
function scenario (name, roots, build) {
  const mirror = new Y.Doc()
  const steps = []
  const record = (contains, update, expect = 'applied', refusal) => {
    if (!(update instanceof Uint8Array) || update.length === 0) throw new Error(`${name}: ${contains}: no update`)
    const step = { file: writeUpdate(update), contains, expect }
    if (refusal !== undefined) step.refusal = refusal
    if (expect === 'applied') {
      Y.applyUpdate(mirror, update)
      step.content = renderRoots(mirror, roots)
    }
    steps.push(step)
  }
  /** Records the one update `doc` writes while `change` runs. */
  const capture = (doc, contains, change) => record(contains, written(doc, change))
  /** Records the update of one transaction of `doc`. */
  const edit = (doc, contains, change) => record(contains, transaction(doc, () => change(doc)))
  build({ record, edit, capture, mirror })
  manifest.push({ scenario: name, roots, steps })
}

/**
 * The one update `doc` writes while `change` runs (`undefined` if it
 * writes none and `optional`).
 */
function written (doc, change, optional = false) {
  const updates = []
  const listen = (update) => updates.push(update)
  doc.on('update', listen)
  change()
  doc.off('update', listen)
  if (updates.length > 1 || (updates.length === 0 && !optional)) throw new Error(`${updates.length} updates`)
  return updates[0]
}

/** The update of one transaction of `doc`. */
const transaction = (doc, change, optional) => written(doc, () => doc.transact(change), optional)

/** A writer with a fixed client ID. */
const writer = (clientID, opts) => {
  const doc = new Y.Doc(opts)
  doc.clientID = clientID
  return doc
}

/** Brings `to` up to date with `from` (as a provider would). */
const sync = (from, to) => Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)))

/** Also records `doc`'s whole state, on its own, as a document loaded from it. */
const wholeState = (name, doc, roots) => {
  scenario(`${name}: whole state`, roots, ({ record }) => {
    record(`the whole state of ${name}`, Y.encodeStateAsUpdate(doc))
  })
}

// Every kind of value lib0 writes (`writeAny`), with the edges of each
// encoding: small integers are varints, other numbers float32 when exact,
// else float64; bigints 8 bytes.
const EVERY_ANY = {
  undefined,
  null: null,
  true: true,
  false: false,
  zero: 0,
  negativeZero: -0,
  small: 42,
  negative: -1,
  int31: 2 ** 31 - 1,
  pastInt31: 2 ** 31,
  negativeInt31: -(2 ** 31),
  maxSafe: Number.MAX_SAFE_INTEGER,
  float32: 1.5,
  float64: 0.1,
  huge: 1e300,
  tiny: 5e-324,
  nan: NaN,
  infinity: Infinity,
  negativeInfinity: -Infinity,
  bigint: 12345678901234567n,
  bigintMax: 2n ** 63n - 1n,
  bigintMin: -(2n ** 63n),
  empty: '',
  string: 'héllo 😀 世界',
  bytes: new Uint8Array([0, 1, 127, 128, 255]),
  noBytes: new Uint8Array(0),
  emptyArray: [],
  array: [1, 'two', null, true, [3.5, [{ deep: 'x' }]], new Uint8Array([9])],
  emptyObject: {},
  object: { a: 1, 'ключ': 'значение', nested: { list: [false, -7], none: null } },
  date: new Date(0) // lib0 writes a Date as an object without keys
}

// ---------------------------------------------------------------------------
// Scenarios.

scenario('text', { text: 'text' }, ({ edit, capture }) => {
  const doc = writer(1)
  const text = doc.getText('text')
  const undo = new Y.UndoManager(text, { captureTimeout: 0 })
  edit(doc, 'ContentString: typed text', () => text.insert(0, 'Hello world'))
  edit(doc, 'ContentString: unicode (accents, emoji, CJK, combining marks)', () =>
    text.insert(5, ', héllo 😀 世界 e\u0301'))
  edit(doc, 'ContentFormat: bold', () => text.format(0, 5, { bold: true }))
  edit(doc, 'ContentFormat: an object value and an overlapping range', () =>
    text.format(3, 6, { link: { href: 'https://example.com', target: null }, color: '#f00' }))
  edit(doc, 'ContentFormat removed (null)', () => text.format(0, 2, { bold: null }))
  edit(doc, 'ContentEmbed: an object', () => text.insertEmbed(2, { image: 'a.png', width: 100 }))
  edit(doc, 'ContentEmbed with formatting attributes', () =>
    text.insertEmbed(4, { formula: 'e=mc^2' }, { italic: true }))
  edit(doc, 'ContentType: a Y.Map embedded in text', () => {
    const map = new Y.Map()
    map.set('kind', 'mention')
    text.insertEmbed(1, map)
  })
  edit(doc, 'text inserted with formatting attributes', () => text.insert(0, 'Title ', { header: 1 }))
  edit(doc, 'deletes: text across format boundaries', () => text.delete(3, 8))
  edit(doc, 'deletes: everything left (text, formats, embeds, the embedded type)', () =>
    text.delete(0, text.length))
  capture(doc, 'undo: the deleted content comes back as new items', () => undo.undo())
  capture(doc, 'redo: deleted again', () => undo.redo())
  capture(doc, 'undo again', () => undo.undo())
  wholeState('text', doc, { text: 'text' })
})

// Yjs lets an insert split a surrogate pair and replaces both halves with
// U+FFFD. yrs counting text in UTF-8 bytes (its default, and the server's
// document) then miscounts the text's length, and deleting it overflows
// (a panic in debug builds); counting in UTF-16 as Yjs does, it matches.
scenario('text: an insert inside a surrogate pair', { text: 'text' }, ({ edit }) => {
  const doc = writer(15)
  const text = doc.getText('text')
  edit(doc, 'text with an emoji', () => text.insert(0, 'a😀b'))
  edit(doc, 'an insert between the emoji\'s two UTF-16 units', () => text.insert(2, 'x'))
  edit(doc, 'deletes: all of it', () => text.delete(0, text.length))
})

scenario('map: every value type', { map: 'map' }, ({ edit }) => {
  const doc = writer(2)
  const map = doc.getMap('map')
  for (const [key, value] of Object.entries(EVERY_ANY)) {
    edit(doc, `ContentAny: ${key}`, () => map.set(key, value))
  }
  edit(doc, 'ContentBinary: a Uint8Array set in a map', () => map.set('binary', new Uint8Array([7, 8])))
  edit(doc, 'overwritten values', () => {
    map.set('small', 43)
    map.set('string', 'overwritten')
  })
  edit(doc, 'ContentType: nested Y.Map, Y.Array, Y.Text', () => {
    const inner = new Y.Map()
    inner.set('x', 1)
    map.set('map', inner)
    map.set('array', Y.Array.from([1, 2, 3]))
    map.set('text', new Y.Text('nested text'))
  })
  edit(doc, 'edits inside nested types', () => {
    map.get('map').set('y', { z: [1, 2] })
    map.get('array').insert(1, ['inserted'])
    map.get('text').format(0, 6, { bold: true })
  })
  edit(doc, 'deletes: keys of every kind', () => {
    for (const key of ['undefined', 'bytes', 'binary', 'object', 'nan', 'bigint', 'date', 'map']) map.delete(key)
  })
  edit(doc, 'deletes: inside nested types', () => {
    map.get('array').delete(0, 2)
    map.get('text').delete(2, 4)
  })
  wholeState('map', doc, { map: 'map' })
})

scenario('array: every value type and binary', { array: 'array' }, ({ edit }) => {
  const doc = writer(3)
  const array = doc.getArray('array')
  // An array element is ContentAny only for numbers, strings, booleans,
  // null, arrays and plain objects (Uint8Array is ContentBinary; Yjs throws
  // on the rest), so the others go inside an object.
  const plain = (v) => v === null || [Number, String, Boolean, Array, Object].includes(v.constructor)
  const values = Object.values(EVERY_ANY).filter((v) => v !== undefined && plain(v))
  const others = Object.fromEntries(Object.entries(EVERY_ANY).filter(([, v]) => v === undefined || !plain(v)))
  edit(doc, 'ContentAny: every value type in one insert', () => array.insert(0, [...values, others]))
  edit(doc, 'ContentBinary: Uint8Array elements', () =>
    array.insert(3, [new Uint8Array([1, 2, 3]), new Uint8Array(0)]))
  edit(doc, 'ContentType: nested types, with contents', () => {
    const inner = new Y.Array()
    inner.insert(0, [1, new Y.Map([['k', 'v']])])
    array.insert(1, [inner, new Y.Text('t')])
  })
  edit(doc, 'inserts between elements', () => {
    array.insert(10, ['middle'])
    array.push(['end'])
    array.unshift(['start'])
  })
  edit(doc, 'deletes: binary, nested types and values', () => {
    array.delete(2, 2)
    array.delete(4, 3)
  })
  edit(doc, 'deletes: everything', () => array.delete(0, array.length))
  wholeState('array', doc, { array: 'array' })
})

scenario('xml', { xml: 'xml' }, ({ edit }) => {
  const doc = writer(4)
  const xml = doc.getXmlFragment('xml')
  edit(doc, 'ContentType: XmlElement with attributes and XmlText', () => {
    const heading = new Y.XmlElement('heading')
    heading.setAttribute('level', 1)
    heading.insert(0, [new Y.XmlText('Title')])
    const p = new Y.XmlElement('paragraph')
    p.setAttribute('textAlign', 'left')
    p.insert(0, [new Y.XmlText('Some text')])
    xml.insert(0, [heading, p])
  })
  edit(doc, 'XmlElement attributes of every kind; overwrite', () => {
    const p = xml.get(1)
    p.setAttribute('textAlign', 'center')
    p.setAttribute('data', { a: [1, 2], b: null })
    p.setAttribute('flag', true)
  })
  edit(doc, 'XmlText formatting attributes (marks)', () => {
    const text = xml.get(1).get(0)
    text.format(0, 4, { bold: {} })
    text.format(5, 4, { link: { href: 'https://example.com' } })
    text.insert(9, ' and more', { italic: {} })
  })
  edit(doc, 'XmlText attributes; nested lists', () => {
    xml.get(0).get(0).setAttribute('lang', 'en')
    const li = new Y.XmlElement('listItem')
    const p = new Y.XmlElement('paragraph')
    p.insert(0, [new Y.XmlText('item')])
    li.insert(0, [p])
    const list = new Y.XmlElement('bulletList')
    list.insert(0, [li])
    xml.insert(2, [list])
  })
  edit(doc, 'an embed in XmlText', () => xml.get(1).get(0).insertEmbed(0, { image: 'x.png' }))
  edit(doc, 'deletes: an attribute, formatted text, an element', () => {
    xml.get(1).removeAttribute('flag')
    xml.get(1).get(0).delete(0, 6)
    xml.delete(0, 1)
  })
  edit(doc, 'deletes: nested elements', () => xml.get(1).delete(0, 1))
  wholeState('xml', doc, { xml: 'xml' })
})

scenario('subdocuments', { docs: 'map', list: 'array' }, ({ edit }) => {
  const doc = writer(5)
  const docs = doc.getMap('docs')
  const list = doc.getArray('list')
  edit(doc, 'ContentDoc: plain', () => docs.set('plain', new Y.Doc({ guid: 'guid-plain' })))
  edit(doc, 'ContentDoc: autoLoad, meta, gc off', () => {
    docs.set('loaded', new Y.Doc({ guid: 'guid-loaded', autoLoad: true, meta: { title: 'Notes', n: 3 } }))
    docs.set('nogc', new Y.Doc({ guid: 'guid-nogc', gc: false }))
  })
  edit(doc, 'ContentDoc in an array', () =>
    list.insert(0, [new Y.Doc({ guid: 'guid-a' }), 'between', new Y.Doc({ guid: 'guid-b' })]))
  edit(doc, 'deletes: subdocuments', () => {
    docs.delete('plain')
    list.delete(0, 1)
  })
  wholeState('subdocuments', doc, { docs: 'map', list: 'array' })
})

scenario('two writers', { text: 'text', list: 'array' }, ({ record }) => {
  const a = writer(6)
  const b = writer(7)
  record('A types', transaction(a, () => a.getText('text').insert(0, 'alpha ')))
  sync(a, b)
  const fromB = transaction(b, () => b.getText('text').insert(3, 'BETA'))
  const fromA = transaction(a, () => a.getText('text').insert(6, 'gamma'))
  record('B types inside A\'s text', fromB)
  record('A types concurrently', fromA)
  sync(a, b)
  sync(b, a)
  record('B deletes A\'s and its own text', transaction(b, () => b.getText('text').delete(1, 5)))
  sync(b, a)
  record('A fills an array', transaction(a, () => a.getArray('list').insert(0, [1, 2, 3, 4])))
  sync(a, b)
  record('B deletes part of it', transaction(b, () => b.getArray('list').delete(1, 2)))
})

scenario('merged and diffed updates', { text: 'text' }, ({ record, mirror }) => {
  const doc = writer(8)
  const text = doc.getText('text')
  const updates = []
  doc.on('update', (u) => updates.push(u))
  doc.transact(() => text.insert(0, 'one '))
  doc.transact(() => text.insert(4, 'two '))
  doc.transact(() => text.insert(8, 'three'))
  doc.transact(() => text.delete(0, 2))
  const [u1, u2, u3, u4] = updates
  record('mergeUpdates of the first update alone', Y.mergeUpdates([u1]))
  const skipping = Y.mergeUpdates([u1, u3])
  record('mergeUpdates of the first and third: a Skip over the second, which the document lacks', skipping, 'incomplete')
  record('the second', u2)
  record('the same merge once the document has the skipped clocks', skipping)
  record('an update that only deletes', u4)
  const sv = Y.encodeStateVector(mirror)
  doc.transact(() => text.insert(0, 'zero '))
  record('diffUpdate of everything against the document\'s state vector', Y.diffUpdate(Y.mergeUpdates(updates), sv))
  record('encodeStateAsUpdate against the document\'s state vector (only the delete set)', Y.encodeStateAsUpdate(doc, Y.encodeStateVector(mirror)))
  record('mergeUpdates of everything (all known)', Y.mergeUpdates(updates))
})

scenario('many small edits', { text: 'text', list: 'array', map: 'map' }, ({ record }) => {
  // A seeded generator, so every run writes the same fixtures.
  let seed = 12345
  const next = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n }
  const doc = writer(9)
  const other = writer(10)
  for (let i = 0; i < 300; i++) {
    const who = i % 3 === 0 ? other : doc
    const update = transaction(who, () => {
      const t = who.getText('text')
      const l = who.getArray('list')
      const m = who.getMap('map')
      switch (next(6)) {
        case 0: t.insert(next(t.length + 1), 'ab😀c'.slice(0, 1 + next(5))); break
        case 1: if (t.length > 0) { const at = next(t.length); t.delete(at, 1 + next(Math.min(3, t.length - at))) } else t.insert(0, 'x'); break
        case 2: if (t.length > 1) t.format(next(t.length - 1), 1, { bold: next(2) === 0 ? true : null }); else t.insert(0, 'y'); break
        case 3: l.insert(next(l.length + 1), [next(1000), 'v' + i]); break
        case 4: if (l.length > 0) l.delete(next(l.length), 1); else l.push([i]); break
        default: if (next(3) === 0 && m.size > 0) m.delete(Array.from(m.keys())[0]); else m.set('k' + next(20), next(2) ? i : { i }); break
      }
    }, true)
    if (update !== undefined) record(`edit ${i}`, update)
    sync(who, who === doc ? other : doc)
  }
  wholeState('many small edits', doc, { text: 'text', list: 'array', map: 'map' })
})

scenario('gc off', { text: 'text', map: 'map' }, ({ edit }) => {
  const doc = writer(11, { gc: false })
  edit(doc, 'text and a map', () => {
    doc.getText('text').insert(0, 'kept after deletion')
    doc.getMap('map').set('nested', new Y.Map([['k', 1]]))
  })
  edit(doc, 'deletes with gc off', () => {
    doc.getText('text').delete(0, 5)
    doc.getMap('map').delete('nested')
  })
  wholeState('gc off', doc, { text: 'text', map: 'map' })
})

// What a stock client can write and Quire refuses on purpose (README,
// ARCHITECTURE.md "Rules from fuzzing").
scenario('documented refusals', { xml: 'xml', map: 'map', deep: 'array' }, ({ record }) => {
  const hook = writer(12)
  record('Y.XmlHook (yrs reads it differently from Yjs)', transaction(hook, () => hook.getXmlFragment('xml').insert(0, [new Y.XmlHook('custom')])), 'refused', 'XML hooks are not accepted')
  const values = writer(13)
  let nested = 'bottom'
  for (let i = 0; i < 70; i++) nested = [nested]
  record('a value nested 70 deep (past 64)', transaction(values, () => values.getMap('map').set('deep', nested)), 'refused', 'values nested too deeply')
  const types = writer(14)
  record('shared types nested 251 deep (past 250)', transaction(types, () => {
    let parent = types.getArray('deep')
    for (let i = 0; i < 251; i++) {
      const inner = new Y.Array()
      parent.insert(0, [inner])
      parent = inner
    }
  }), 'refused', 'nests shared types')
})

fs.writeFileSync(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 1))
console.log(JSON.stringify({ ok: true, scenarios: manifest.length, updates: files }))
