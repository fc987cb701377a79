// The load generator of `make bench`: lean y-websocket clients on `ws`, updates pre-encoded with `yjs`.
//
// Usage: node gen.mjs SPEC.json. The orchestrator (run.py) pins this process to its own core and
// reads stdout: `MARK <label>` lines ask it to sample server and generator CPU/RSS right now, and the
// last line, `RESULT <json>`, holds the figures. Every wait is bounded; the process exits by itself.
//
// Latency: each inserted string carries its update's sequence number (`~S<seq>;`), which stays
// readable in the Yjs update bytes whatever server re-encodes or merges them, so every receipt at
// every subscriber is matched to its send time; deliveries never seen are counted as lost.

import fs from 'node:fs'
import zlib from 'node:zlib'
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import * as Y from 'yjs'

const now = () => performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const mark = (label) => process.stdout.write(`MARK ${label}\n`)
const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))

// -- wire format (y-protocols) ------------------------------------------------------------

function varuint (n, out) {
  while (n > 0x7f) {
    out.push(0x80 | (n & 0x7f))
    n = Math.floor(n / 128)
  }
  out.push(n)
}

function message (head, payload) {
  const prefix = [...head]
  varuint(payload.length, prefix)
  const buf = Buffer.allocUnsafe(prefix.length + payload.length)
  buf.set(prefix, 0)
  buf.set(payload, prefix.length)
  return buf
}

const SYNC_STEP1 = 0
const SYNC_STEP2 = 1
const SYNC_UPDATE = 2
const step1Empty = message([0, SYNC_STEP1], Uint8Array.of(0))
const step2Empty = message([0, SYNC_STEP2], Uint8Array.of(0, 0))
const updateMessage = (update) => message([0, SYNC_UPDATE], update)

function awarenessMessage (clientId, clock, state) {
  const payload = [1]
  varuint(clientId, payload)
  varuint(clock, payload)
  const json = Buffer.from(JSON.stringify(state))
  varuint(json.length, payload)
  return message([1], Buffer.concat([Buffer.from(payload), json]))
}

// Sequence numbers found in an update: every `~S<digits>;` in its bytes.
function* seqsIn (buf) {
  for (let i = 2; i < buf.length - 2; i++) {
    if (buf[i] !== 0x7e || buf[i + 1] !== 0x53) continue
    let n = 0
    let j = i + 2
    while (j < buf.length && buf[j] >= 0x30 && buf[j] <= 0x39) n = n * 10 + buf[j++] - 0x30
    if (j < buf.length && buf[j] === 0x3b && j > i + 2) yield n
    i = j
  }
}

// -- clients ----------------------------------------------------------------------------------

/**
 * Open one connection; resolves once synced (CRDT servers: our step 1 answered with step 2) or
 * open (the relay, which has no document), rejects on error or timeout.
 */
function connect (url, { crdt, timeout = 30000, onUpdate = null, onOther = null }) {
  return new Promise((resolve, reject) => {
    const client = { ws: null, t0: now(), tOpen: 0, tSynced: 0, step2Bytes: 0, index: -1 }
    let settled = false
    const finish = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err) {
        try { ws.terminate() } catch {}
        reject(err)
      } else {
        resolve(client)
      }
    }
    const timer = setTimeout(() => finish(new Error('timeout')), timeout)
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: timeout })
    client.ws = ws
    ws.binaryType = 'nodebuffer'
    ws.on('open', () => {
      client.tOpen = now()
      if (crdt) ws.send(step1Empty)
      else finish()
    })
    ws.on('message', (data) => {
      if (data[0] === 0 && data[1] === SYNC_UPDATE) {
        if (onUpdate) onUpdate(client, data)
      } else if (data[0] === 0 && data[1] === SYNC_STEP1) {
        ws.send(step2Empty) // what a real provider does: send what the server lacks (nothing)
      } else if (data[0] === 0 && data[1] === SYNC_STEP2) {
        client.tSynced = now()
        client.step2Bytes = data.length
        finish()
      } else if (onOther) {
        onOther(client, data)
      }
    })
    ws.on('error', (err) => finish(err))
    ws.on('close', () => finish(new Error('closed')))
  })
}

/**
 * Connect `urls` with at most `concurrency` handshakes in flight; failures are counted. Unless
 * `herd`, the first client of each room connects before the others of that room: pycrdt-websocket
 * never answers clients that join a room while it is starting (the burst step measures that).
 */
async function connectAll (urls, opts, concurrency = 100, herd = false) {
  const clients = new Array(urls.length)
  const seen = new Set()
  const first = []
  const rest = []
  urls.forEach((url, i) => {
    if (herd || !seen.has(url)) first.push(i)
    else rest.push(i)
    seen.add(url)
  })
  let failed = 0
  let firstError = null
  const run = async (order) => {
    let next = 0
    const worker = async () => {
      while (next < order.length) {
        const i = order[next++]
        try {
          clients[i] = await connect(urls[i], opts)
          clients[i].index = i
        } catch (err) {
          failed++
          firstError ??= String(err.message || err)
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, order.length) }, worker))
  }
  await run(first)
  await run(rest)
  return { clients, failed, firstError }
}

function closeAll (clients) {
  for (const c of clients) {
    if (c && c.ws.readyState <= 1) c.ws.terminate()
  }
}

// -- figures ----------------------------------------------------------------------------------

function percentile (sorted, p) {
  if (!sorted.length) return null
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

function summary (values) {
  const sorted = Float64Array.from(values).sort()
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : null
  }
}

// -- pre-encoded updates with sequence numbers ----------------------------------------------------

/**
 * `count` updates by one writer, each inserting `~S<seq>;` (seq = base + i) at its cursor, like
 * typing: the cursor moves on with the text and jumps to a random place every 40 updates. (Typing
 * one endless run instead makes every pycrdt/yrs apply cost grow with the run's length.)
 */
function writerUpdates (count, base, clientID) {
  const doc = new Y.Doc()
  doc.clientID = clientID
  const text = doc.getText('content')
  const out = []
  let seed = clientID
  const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32)
  let cursor = 0
  doc.on('update', (u) => out.push(updateMessage(u)))
  for (let i = 0; i < count; i++) {
    if (i % 40 === 0) cursor = Math.floor(rand() * (text.length + 1))
    const chunk = `~S${base + i};`
    text.insert(cursor, chunk)
    cursor += chunk.length
  }
  doc.destroy()
  return out
}

// -- end-appending writers (issue 14) ---------------------------------------------------------

/** A random 32-bit client id, as Yjs gives every new Y.Doc (real clients are never 1000 + w). */
const randomClientID = () => crypto.getRandomValues(new Uint32Array(1))[0]

const CONTENT_KEY = Buffer.from('content')

/**
 * One client appending `chunks` one after another at the end of `content`, never moving its
 * cursor: update i is a single string item whose origin is the last character of update i - 1
 * (the first has none, so it names the root type). This is the Yjs update v1 a Y.Doc emits for
 * `text.insert(text.length, chunk)` (checkAppendEncoding proves it at start), encoded directly:
 * Yjs's own encoder slices the whole merged run for every update, O(run) per update, and 40,000
 * appends would cost the generator minutes. Clocks count UTF-16 units, as in Yjs.
 */
function appendUpdates (chunks, clientID) {
  const out = []
  let clock = 0
  for (const chunk of chunks) {
    const bytes = Buffer.from(chunk, 'utf8')
    const head = [1, 1] // one client, one struct
    varuint(clientID, head)
    varuint(clock, head)
    if (clock === 0) {
      head.push(4) // ContentString, no origin: parent info follows
      varuint(1, head)
      varuint(CONTENT_KEY.length, head)
      head.push(...CONTENT_KEY)
    } else {
      head.push(0x80 | 4) // ContentString with a left origin
      varuint(clientID, head)
      varuint(clock - 1, head)
    }
    varuint(bytes.length, head)
    out.push(updateMessage(Buffer.concat([Buffer.from(head), bytes, Buffer.of(0)]))) // empty delete set
    clock += chunk.length
  }
  return out
}

/** Throw unless appendUpdates gives the bytes Yjs itself sends, for small and 32-bit ids. */
function checkAppendEncoding () {
  for (const clientID of [7, 1000, 2 ** 31 + 12345, 2 ** 32 - 1]) {
    const doc = new Y.Doc()
    doc.clientID = clientID
    const text = doc.getText('content')
    const got = []
    doc.on('update', (u) => got.push(updateMessage(u)))
    const chunks = ['~S0;', 'a', 'é€', '~S123456;', 'x'.repeat(300), '😀b', 'z']
    for (const c of chunks) text.insert(text.length, c)
    doc.destroy()
    const ours = appendUpdates(chunks, clientID)
    if (got.length !== ours.length || got.some((g, i) => !g.equals(ours[i]))) {
      throw new Error(`appendUpdates differs from yjs for client ${clientID}`)
    }
  }
}

/** `count` updates `~S<seq>;` (seq = base + i) appended at the end by one new random client. */
function endWriterUpdates (count, base, clientID = randomClientID()) {
  return appendUpdates(Array.from({ length: count }, (_, i) => `~S${base + i};`), clientID)
}

/**
 * Delivery bookkeeping for `total` updates: send times, owners (a client never counts its own
 * echo) and how many receipts each update got.
 */
class Tracker {
  constructor (total, receiversPer) {
    this.sent = new Float64Array(total).fill(-1)
    this.owner = new Int32Array(total).fill(-1)
    this.got = new Uint16Array(total)
    this.receiversPer = receiversPer
    this.latencies = []
    this.lastReceipt = 0
    this.delivered = 0
  }

  onUpdate = (client, data) => {
    const t = now()
    for (const seq of seqsIn(data)) {
      if (seq >= this.sent.length || this.sent[seq] < 0 || this.owner[seq] === client.index) continue
      this.got[seq]++
      this.delivered++
      this.latencies.push(t - this.sent[seq])
      this.lastReceipt = t
    }
  }

  expected (sentCount) {
    return sentCount * this.receiversPer
  }

  complete (sentCount) {
    return this.delivered >= this.expected(sentCount)
  }

  report (sentCount) {
    let lost = 0
    let duplicated = 0
    for (let i = 0; i < this.sent.length; i++) {
      if (this.sent[i] < 0) continue
      lost += Math.max(0, this.receiversPer - this.got[i])
      duplicated += Math.max(0, this.got[i] - this.receiversPer)
    }
    return {
      sent: sentCount,
      expected: this.expected(sentCount),
      delivered: this.delivered,
      lost,
      duplicated,
      latency_ms: summary(this.latencies)
    }
  }
}

/**
 * Send `updates[w]` from `writers[w]` at `rate` updates/s in total (round robin), then wait up
 * to `drainMs` for every delivery. Returns the send window and the receipts.
 */
async function paced (writers, updates, tracker, rate, drainMs) {
  const perWriter = updates[0].length
  const total = perWriter * writers.length
  const start = now()
  let sent = 0
  while (sent < total) {
    const due = Math.min(total, Math.floor(((now() - start) / 1000) * rate) + 1)
    while (sent < due) {
      const w = sent % writers.length
      const i = Math.floor(sent / writers.length)
      const frame = updates[w][i]
      const seq = w * perWriter + i
      tracker.sent[seq] = now()
      writers[w].ws.send(frame)
      sent++
    }
    await sleep(1)
  }
  const sendEnd = now()
  const deadline = sendEnd + drainMs
  while (!tracker.complete(total) && now() < deadline) await sleep(2)
  return { total, start, sendEnd, sendSeconds: (sendEnd - start) / 1000 }
}

// -- scenarios -----------------------------------------------------------------------------

const roomUrl = (room) => `${spec.base}/ws/${room}`
const crdt = spec.crdt

/** One room: `writers` writing, `subs` only listening; or many rooms of `perRoom` writers. */
async function trafficStep ({ label, rooms, writersPerRoom, subsPerRoom, rate, seconds, drainMs, writer }) {
  const nWriters = rooms * writersPerRoom
  const perWriter = Math.max(1, Math.round((rate * seconds) / nWriters))
  const updates = Array.from({ length: nWriters }, (_, w) =>
    writer === 'end'
      ? endWriterUpdates(perWriter, w * perWriter) // appends at the end, random client ids
      : writerUpdates(perWriter, w * perWriter, 1000 + w)
  )
  // Each update reaches the room's other writers and its subscribers.
  const receiversPer = writersPerRoom - 1 + subsPerRoom
  const tracker = new Tracker(nWriters * perWriter, receiversPer)
  const tag = `${label}-${process.pid}-${Date.now() % 1e6}`
  const roomOf = (r) => roomUrl(`${tag}-r${r}`)
  const writerUrls = Array.from({ length: nWriters }, (_, w) => roomOf(Math.floor(w / writersPerRoom)))
  // Subscribers may be spread over several servers of one cluster (spec.sub_bases).
  const subBases = spec.sub_bases || [spec.base]
  const subUrls = []
  for (let r = 0; r < rooms; r++) {
    for (let s = 0; s < subsPerRoom; s++) {
      subUrls.push(`${subBases[subUrls.length % subBases.length]}/ws/${tag}-r${r}`)
    }
  }
  const opts = { crdt, timeout: 60000, onUpdate: tracker.onUpdate }
  const t0 = now()
  const subs = await connectAll(subUrls, opts)
  const writers = await connectAll(writerUrls, opts)
  // Writer w owns sequence numbers [w * perWriter, (w + 1) * perWriter): its index says so.
  writers.clients.forEach((c, w) => { if (c) c.index = -2 - w })
  for (let w = 0; w < nWriters; w++) tracker.owner.fill(-2 - w, w * perWriter, (w + 1) * perWriter)
  const connectSeconds = (now() - t0) / 1000
  const out = { label, rate, seconds, rooms, writers_per_room: writersPerRoom, subs_per_room: subsPerRoom }
  out.connect_s = connectSeconds
  out.connect_failed = subs.failed + writers.failed
  out.connect_error = subs.firstError || writers.firstError
  if (out.connect_failed) {
    closeAll([...subs.clients, ...writers.clients])
    return { ...out, ok: false, error: `connect failed: ${out.connect_failed} (${out.connect_error})` }
  }
  await sleep(200)
  mark(`${label}:start`)
  const run = await paced(writers.clients, updates, tracker, rate, drainMs)
  mark(`${label}:end`)
  const end = now()
  closeAll([...subs.clients, ...writers.clients])
  const rep = tracker.report(run.total)
  return {
    ...out,
    ...rep,
    send_s: run.sendSeconds,
    window_s: (end - run.start) / 1000,
    achieved_rate: run.total / run.sendSeconds,
    ok: true
  }
}

async function fanout () {
  const steps = []
  for (const subs of spec.subs) {
    steps.push(await trafficStep({
      label: `fanout-${subs}`,
      rooms: 1,
      writersPerRoom: 1,
      subsPerRoom: subs,
      rate: spec.rate,
      seconds: spec.seconds,
      drainMs: spec.drain_ms
    }))
    await sleep(300)
  }
  return { steps }
}

/** Step the rate up until p99 > limit or anything is lost; then bisect between pass and fail. */
async function throughput () {
  const steps = []
  const { rooms, writers_per_room: wpr, subs_per_room: spr } = spec.layout
  const deadline = now() + spec.budget_s * 1000
  const passes = (s) => s.ok && s.lost === 0 && s.latency_ms.p99 !== null &&
    s.latency_ms.p99 <= spec.p99_limit_ms && s.achieved_rate >= 0.95 * s.rate
  let rate = spec.start_rate
  let best = null
  let fail = null
  const attempt = async (label) => {
    const step = await trafficStep({
      label,
      rooms,
      writersPerRoom: wpr,
      subsPerRoom: spr,
      rate,
      seconds: spec.seconds,
      drainMs: spec.drain_ms,
      writer: spec.writer
    })
    step.pass = passes(step)
    steps.push(step)
    return step
  }
  for (let i = 0; i < spec.max_steps && now() < deadline; i++) {
    let step = await attempt(`${spec.label}-${i}`)
    for (let r = 1; !step.pass && r <= (spec.retries ?? 0); r++) {
      // A shared machine has hiccups (a stall of a few hundred ms fails a step at a rate the
      // server sustains easily): a rate fails only if every attempt fails.
      step.superseded = true
      await sleep(500)
      step = await attempt(`${spec.label}-${i}r${r}`)
    }
    if (step.pass) best = rate
    else fail = rate
    if (fail === null) rate *= 2
    else if (best === null) {
      if (rate <= spec.min_rate) break
      rate = Math.max(spec.min_rate, Math.round(rate / 2))
    } else if (fail / best > (spec.resolution ?? 1.2)) rate = Math.round(Math.sqrt(best * fail))
    else break
    await sleep(500)
  }
  return { steps, best_rate: best, failed_rate: fail }
}

/** Idle connections over many rooms: handshake+sync time; RSS sampled by the orchestrator. */
async function connections () {
  const steps = []
  for (const n of spec.counts) {
    const tag = `conn${n}-${process.pid}`
    const urls = Array.from({ length: n }, (_, i) => roomUrl(`${tag}-r${i % Math.ceil(n / spec.per_room)}`))
    await sleep(500)
    mark(`conn-${n}:before`)
    const t0 = now()
    const res = await connectAll(urls, { crdt, timeout: 60000 }, spec.concurrency)
    const total = (now() - t0) / 1000
    const ok = res.clients.filter(Boolean)
    await sleep(spec.settle_ms)
    mark(`conn-${n}:after`)
    steps.push({
      label: `conn-${n}`,
      n,
      rooms: Math.ceil(n / spec.per_room),
      failed: res.failed,
      error: res.firstError,
      total_s: total,
      handshake_sync_ms: summary(ok.map((c) => (crdt ? c.tSynced : c.tOpen) - c.t0))
    })
    closeAll(ok)
    await sleep(1000)
  }
  // Regression guard: many clients join one brand-new room at the same instant.
  const n = spec.burst
  const urls = Array.from({ length: n }, () => roomUrl(`burst-${process.pid}`))
  const t0 = now()
  const res = await connectAll(urls, { crdt, timeout: spec.burst_timeout_ms }, n, true)
  const ok = res.clients.filter(Boolean)
  steps.push({
    label: `burst-${n}`,
    n,
    failed: res.failed,
    error: res.firstError,
    total_s: (now() - t0) / 1000,
    handshake_sync_ms: summary(ok.map((c) => (crdt ? c.tSynced : c.tOpen) - c.t0))
  })
  closeAll(ok)
  return { steps }
}

// -- the large document ----------------------------------------------------------------------

function readPrefixed (buf) {
  const out = []
  let pos = 0
  while (pos < buf.length) {
    const len = buf.readUInt32LE(pos)
    out.push(buf.subarray(pos + 4, pos + 4 + len))
    pos += 4 + len
  }
  return out
}

/** Seeded synthetic typing (inserts with some backspaces) when the real trace is missing. */
function syntheticTrace (ops, seed) {
  let s = seed >>> 0
  const rand = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32)
  const patches = []
  let len = 0
  let cursor = 0
  for (let i = 0; i < ops; i++) {
    if (rand() < 0.02) cursor = Math.floor(rand() * (len + 1))
    if (len > 0 && cursor > 0 && rand() < 0.3) {
      patches.push([--cursor, 1, ''])
      len--
    } else {
      patches.push([cursor++, 0, String.fromCharCode(97 + Math.floor(rand() * 26))])
      len++
    }
  }
  return { startContent: '', endContent: null, txns: [{ patches }] }
}

/** Replay the trace into a Y.Doc; write every keystroke's update and the final state. */
function build () {
  let trace
  let source
  if (spec.trace && fs.existsSync(spec.trace)) {
    trace = JSON.parse(zlib.gunzipSync(fs.readFileSync(spec.trace)).toString())
    source = spec.trace
  } else {
    trace = syntheticTrace(spec.synthetic_ops, 42)
    source = `synthetic (${spec.synthetic_ops} ops, seed 42)`
  }
  const doc = new Y.Doc()
  doc.clientID = 4242
  const text = doc.getText('content')
  const chunks = []
  doc.on('update', (u) => {
    const head = Buffer.allocUnsafe(4)
    head.writeUInt32LE(u.length)
    chunks.push(head, Buffer.from(u))
  })
  if (trace.startContent) text.insert(0, trace.startContent)
  let ops = 0
  for (const txn of trace.txns) {
    for (const [pos, del, ins] of txn.patches) {
      doc.transact(() => {
        if (del) text.delete(pos, del)
        if (ins) text.insert(pos, ins)
      })
      ops++
    }
  }
  if (trace.endContent !== null && text.toString() !== trace.endContent) {
    throw new Error('replayed trace does not match endContent')
  }
  fs.writeFileSync(spec.updates_out, Buffer.concat(chunks))
  const state = Y.encodeStateAsUpdate(doc)
  fs.writeFileSync(spec.doc_out, state)
  return { source, ops, text_chars: text.length, doc_bytes: state.length }
}

/** Wait for the step 2 that answers a full step 1 (the sender's own sync round trip). */
async function upload (url, state) {
  const writer = await connect(url, { crdt, timeout: 60000 })
  writer.ws.send(updateMessage(state))
  // A second step 1 is answered only after the update before it was applied.
  const stateVector = Y.encodeStateVectorFromUpdate(state)
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('upload timeout')), 60000)
    writer.ws.on('message', (data) => {
      if (data[0] === 0 && data[1] === SYNC_STEP2) {
        clearTimeout(timer)
        resolve()
      }
    })
    writer.ws.send(message([0, SYNC_STEP1], stateVector))
  })
  return writer
}

async function freshSyncs (url, count) {
  const times = []
  let bytes = 0
  for (let i = 0; i < count; i++) {
    const c = await connect(url, { crdt, timeout: 60000 })
    times.push(c.tSynced - c.t0)
    bytes = c.step2Bytes
    c.ws.terminate()
    await sleep(100)
  }
  return { ms: summary(times), step2_bytes: bytes }
}

/** Keystrokes at full speed, windows of `window` updates each closed by an awareness barrier. */
async function replay (url, updates) {
  const received = { barrier: -1, at: [] }
  const sub = await connect(url, {
    crdt,
    timeout: 60000,
    onOther: (_c, data) => {
      if (data[0] !== 1) return
      const m = /"w":(\d+)/.exec(data.toString('latin1'))
      if (m) {
        const k = Number(m[1])
        if (k > received.barrier) {
          received.barrier = k
          received.at[k] = now()
        }
      }
    }
  })
  const writer = await connect(url, { crdt, timeout: 60000 })
  const frames = updates.map(updateMessage)
  const windowSize = spec.window
  const deadline = now() + spec.replay_seconds * 1000
  mark('replay:start')
  const start = now()
  let windows = 0
  for (let k = 0; k * windowSize < frames.length; k++) {
    for (const frame of frames.slice(k * windowSize, (k + 1) * windowSize)) writer.ws.send(frame)
    writer.ws.send(awarenessMessage(777, k + 1, { w: k }))
    windows = k + 1
    // At most two windows in flight.
    while (received.barrier < k - 1 && now() < deadline + 30000) await sleep(1)
    if (now() > deadline) break
  }
  const waitEnd = now() + 30000
  while (received.barrier < windows - 1 && now() < waitEnd) await sleep(1)
  mark('replay:end')
  const done = received.barrier + 1
  const keys = Math.min(frames.length, done * windowSize)
  const elapsed = done > 0 ? (received.at[done - 1] - start) / 1000 : null
  sub.ws.terminate()
  writer.ws.terminate()
  return {
    keys,
    of: frames.length,
    seconds: elapsed,
    keys_per_s: elapsed ? keys / elapsed : null,
    complete: keys === frames.length
  }
}

async function largedoc () {
  const updates = readPrefixed(fs.readFileSync(spec.updates))
  if (!crdt) {
    // The relay holds no document: only the keystroke replay applies.
    return { replay: await replay(roomUrl(`replay-${process.pid}`), updates) }
  }
  const state = fs.readFileSync(spec.doc)
  const url = roomUrl(`paper-${process.pid}`)
  const t0 = now()
  const writer = await upload(url, state)
  const uploadSeconds = (now() - t0) / 1000
  const fresh = await freshSyncs(url, spec.syncs)
  await sleep(500)
  mark('largedoc:loaded')
  writer.ws.terminate()
  const rep = await replay(roomUrl(`replay-${process.pid}`), updates)
  return { upload_s: uploadSeconds, doc_bytes: state.length, fresh, replay: rep, room: url.split('/ws/')[1] }
}

/** Upload only (to prepare a data dir), or the cold sync of a freshly started server. */
async function prepare () {
  const state = fs.readFileSync(spec.doc)
  const writer = await upload(roomUrl(spec.room), state)
  writer.ws.terminate()
  return { doc_bytes: state.length }
}

async function coldsync () {
  const c = await connect(roomUrl(spec.room), { crdt, timeout: 60000 })
  c.ws.terminate()
  return { ms: c.tSynced - c.t0, step2_bytes: c.step2Bytes }
}

// -- one long typing run at the end (issue 14) --------------------------------------------------

/**
 * One room, one writer appending at the end without moving its cursor, one subscriber. Updates
 * go out at `spec.rate` (at most `spec.max_in_flight` not yet received by the subscriber); around
 * each count in `spec.points` a window of `spec.window` updates is sent between two MARKs, each
 * taken once every earlier update has reached the subscriber, so the orchestrator reads the
 * server CPU those updates cost. Then, in a new room, a new writer pastes `spec.paste_chars`
 * characters as one insert and types `spec.keystrokes` appends after it (windows `paste-insert`
 * and `paste-keys`). Bounded by `spec.budget_s` overall and `spec.drain_ms` per wait.
 */
async function append () {
  checkAppendEncoding()
  const deadline = now() + spec.budget_s * 1000
  const tag = `append-${process.pid}-${Date.now() % 1e6}`
  const steps = []
  const clientIDs = []

  // One run of `frames` into room `room`; `plan` = [[label, from, to], ...] windows in order.
  const run = async (room, frames, plan) => {
    const n = frames.length
    const sentAt = new Float64Array(n).fill(-1)
    const gotAt = new Float64Array(n).fill(-1)
    let got = 0
    const sub = await connect(roomUrl(room), {
      crdt,
      timeout: 60000,
      onUpdate: (_c, data) => {
        const t = now()
        for (const seq of seqsIn(data)) {
          if (seq < n && sentAt[seq] >= 0 && gotAt[seq] < 0) {
            gotAt[seq] = t
            got++
          }
        }
      }
    })
    const writer = await connect(roomUrl(room), { crdt, timeout: 60000 })
    await sleep(200)
    let next = 0
    const send = async (to) => {
      const start = now()
      const from = next
      while (next < to && now() < deadline) {
        const due = Math.min(to, from + Math.floor(((now() - start) / 1000) * spec.rate) + 1)
        while (next < due && next - got < spec.max_in_flight) {
          sentAt[next] = now()
          writer.ws.send(frames[next++])
        }
        await sleep(1)
      }
      return (now() - start) / 1000
    }
    const drain = async () => {
      const end = Math.min(deadline, now() + spec.drain_ms)
      while (got < next && now() < end) await sleep(2)
      return got >= next
    }
    for (const [label, from, to] of plan) {
      await send(from)
      if (next < from) break // out of time
      const drained = await drain()
      mark(`${label}:start`)
      const sendSeconds = await send(to)
      const complete = await drain()
      mark(`${label}:end`)
      const lat = []
      let delivered = 0
      for (let i = from; i < next; i++) {
        if (gotAt[i] >= 0) {
          delivered++
          lat.push(gotAt[i] - sentAt[i])
        }
      }
      steps.push({
        label,
        from,
        to,
        count: next - from,
        delivered,
        lost: next - from - delivered,
        drained_before: drained,
        complete,
        send_s: sendSeconds,
        achieved_rate: (next - from) / Math.max(sendSeconds, 1e-9),
        latency_ms: summary(lat)
      })
      if (next < to) break // out of time
    }
    sub.ws.terminate()
    writer.ws.terminate()
    return next
  }

  const total = Math.max(...spec.points)
  const runID = spec.client_id ?? randomClientID()
  clientIDs.push(runID)
  const frames = endWriterUpdates(total, 0, runID)
  // Each window in `spec.slices` slices (`label/k`), each between its own marks: the orchestrator
  // takes the median slice, so a burst of someone else's load on the machine moves it less.
  const sliced = (label, from, to) => {
    const k = Math.max(1, Math.min(spec.slices ?? 1, to - from))
    return Array.from({ length: k }, (_, j) => [
      `${label}/${j}`,
      from + Math.round(((to - from) * j) / k),
      from + Math.round(((to - from) * (j + 1)) / k)
    ])
  }
  const plan = spec.points.flatMap((at) => sliced(`append-${at}`, Math.max(0, at - spec.window), at))
  const sentRun = await run(`${tag}-run`, frames, plan)

  // A pasted block, continued: one insert of `paste_chars`, then keystrokes after it.
  let sentPaste = 0
  if (spec.keystrokes > 0 && now() < deadline) {
    const pasteID = randomClientID()
    clientIDs.push(pasteID)
    const head = '~S0;'
    const filler = 'lorem ipsum dolor sit amet, '.repeat(Math.ceil(spec.paste_chars / 28))
    const chunks = [head + filler.slice(0, spec.paste_chars - head.length)]
    for (let k = 1; k <= spec.keystrokes; k++) chunks.push(`~S${k};`)
    sentPaste = await run(`${tag}-paste`, appendUpdates(chunks, pasteID), [
      ['paste-insert', 0, 1],
      ...sliced('paste-keys', 1, chunks.length)
    ])
  }
  return {
    steps,
    client_ids: clientIDs,
    rate: spec.rate,
    points: spec.points,
    sent_run: sentRun,
    of_run: total,
    sent_paste: sentPaste,
    paste_chars: spec.paste_chars,
    complete: sentRun === total && (spec.keystrokes === 0 || sentPaste === spec.keystrokes + 1)
  }
}


// -- big documents (1, 10, 50 MB): fresh sync time, plain and with permessage-deflate offered --

/** A seeded document of about `size` bytes: 3/4 text of Zipf-like words, the rest map and array. */
function bigDocument (size, seed) {
  let s = seed >>> 0
  const rand = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32)
  const letters = 'etaoinshrdlucmfwypvbgkjqxz'
  const vocab = Array.from({ length: 2000 }, (_, i) =>
    Array.from({ length: 1 + Math.floor(-Math.log(1 - rand()) / 0.3) }, () =>
      letters[Math.floor(rand() * (8 + (i % 18)))]).join(''))
  const parts = []
  let poolLength = 0
  const poolSize = Math.min(size, 4 << 20) + 65536
  while (poolLength < poolSize) {
    const w = vocab[Math.floor(vocab.length * rand() * rand())] + (rand() < 0.08 ? '.\n' : ' ')
    parts.push(w)
    poolLength += w.length
  }
  const pool = parts.join('')
  const doc = new Y.Doc()
  doc.clientID = 777
  const text = doc.getText('content')
  const textSize = Math.floor(size * 3 / 4)
  doc.transact(() => {
    for (let written = 0; written < textSize;) {
      const n = Math.min(65536, textSize - written)
      const start = Math.floor(rand() * (pool.length - n))
      text.insert(Math.floor(rand() * (written + 1)), pool.slice(start, start + n))
      written += n
    }
  })
  const rest = size - textSize
  doc.transact(() => {
    const meta = doc.getMap('meta')
    for (let i = 0; i < rest / 2 / 2048; i++) {
      const start = Math.floor(rand() * (pool.length - 2048))
      meta.set(`key-${i}`, pool.slice(start, start + 2000))
    }
    const items = []
    for (let i = 0; i < rest / 2 / 4096; i++) {
      const start = Math.floor(rand() * (pool.length - 4096))
      items.push(pool.slice(start, start + 4000))
    }
    doc.getArray('list').push(items)
  })
  return Y.encodeStateAsUpdate(doc)
}

/** One fresh client: connect, send an empty step 1, time until the whole step 2 arrived. */
/**
 * A fresh client's sync of a large document: from connecting until the step 2 arrived and
 * everything received was applied to a Y.Doc (a server may send updates before its step 2: a
 * large one in parts). `bytes` counts every sync message; `length` is the text then held.
 */
function freshBig (url, deflate, timeout = 120000) {
  return new Promise((resolve, reject) => {
    const t0 = now()
    const doc = new Y.Doc()
    let bytes = 0
    const ws = new WebSocket(url, { perMessageDeflate: deflate, maxPayload: 512 << 20 })
    ws.binaryType = 'nodebuffer'
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('timeout')) }, timeout)
    ws.on('open', () => ws.send(step1Empty))
    ws.on('message', (data) => {
      if (data[0] !== 0) return
      if (data[1] === SYNC_STEP1) {
        ws.send(step2Empty)
        return
      }
      bytes += data.length
      Y.applyUpdate(doc, syncPayload(data))
      if (data[1] === SYNC_STEP2) {
        clearTimeout(timer)
        const ms = now() - t0
        const negotiated = Boolean(ws.extensions && ws.extensions.includes('permessage-deflate'))
        ws.terminate()
        resolve({ ms, bytes, negotiated, length: doc.getText('content').length })
        doc.destroy()
      }
    })
    ws.on('error', (err) => { clearTimeout(timer); reject(err) })
    ws.on('close', () => { clearTimeout(timer); reject(new Error('closed')) })
  })
}

/** The update in a sync message (0, type, varuint length, bytes). */
function syncPayload (data) {
  let pos = 2
  let len = 0
  let shift = 0
  for (;;) {
    const b = data[pos++]
    len += (b & 0x7f) * 2 ** shift
    if (b < 0x80) break
    shift += 7
  }
  return data.subarray(pos, pos + len)
}

async function bigdocs () {
  const steps = []
  for (const size of spec.sizes) {
    const label = `big-${size}`
    const state = bigDocument(size, 20261202)
    const source = new Y.Doc()
    Y.applyUpdate(source, state)
    const textLength = source.getText('content').length
    source.destroy()
    const url = roomUrl(`big${size}-${process.pid}`)
    const step = { label, size, doc_bytes: state.length }
    mark(`${label}:before`)
    try {
      const t0 = now()
      const writer = await upload(url, state)
      step.upload_s = (now() - t0) / 1000
      writer.ws.terminate()
      await sleep(300)
      mark(`${label}:loaded`)
      const plain = []
      const deflate = []
      for (let i = 0; i < spec.syncs; i++) {
        const p = await freshBig(url, false)
        plain.push(p.ms)
        step.step2_bytes = p.bytes
        const d = await freshBig(url, true)
        if (p.length !== textLength || d.length !== textLength) {
          step.error = `synced ${p.length} / ${d.length} characters of ${textLength}`
        }
        deflate.push(d.ms)
        step.deflate_negotiated = d.negotiated
        await sleep(100)
      }
      step.plain_ms = summary(plain)
      step.deflate_ms = summary(deflate)
      mark(`${label}:synced`)
    } catch (err) {
      step.error = String(err.message || err)
    }
    steps.push(step)
  }
  return { steps }
}

const scenarios = { fanout, throughput, connections, largedoc, build, prepare, coldsync, bigdocs, append }

async function main () {
  const started = process.cpuUsage()
  const result = await scenarios[spec.scenario]()
  const cpu = process.cpuUsage(started)
  result.generator_cpu_s = (cpu.user + cpu.system) / 1e6
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`)
}

const guard = setTimeout(() => {
  process.stderr.write(`gen: ${spec.scenario} exceeded ${spec.limit_s}s\n`)
  process.exit(3)
}, (spec.limit_s ?? 600) * 1000)
guard.unref()

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`gen: ${err.stack || err}\n`)
    process.exit(2)
  }
)
