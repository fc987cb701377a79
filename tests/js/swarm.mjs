// Many stock Yjs clients (yjs + y-websocket WebsocketProvider over `ws`) in one Node process,
// for the soak (tests/bench/soak.py, tests/test_soak_smoke.py) and the reconnect storm
// (tests/bench/storm.py).
//
//   node swarm.mjs SPEC_JSON
//
// SPEC: {url, docs: [names], perDoc, soak: {tick, editEvery, awarenessEvery, churnEvery,
//        churnCount, idleEvery, idleFor} | null, connectBatch}
// Every edit inserts a unique token `k<client>x<seq>;` at a token boundary (never inside another
// token, never deleted), so the final text can be checked token by token. An edit is made only
// while its client is connected and synced, except `offline` edits (storm: while the server is
// down), which y-websocket sends on its next sync.
//
// stdout, one JSON object a line: {"event": "ready"} once every first client synced; replies
// {"id": k, ...}. stdin, one JSON object a line with "id" and "cmd":
//   status          -> {clients, connected, synced, joins, leaves, edits, awarenessExcess, ...}
//   edit {offline}  -> every client makes one edit now (offline: even if not connected)
//   arm             -> from now, count how long until every client disconnected and synced again
//   armed           -> {all, resynced, clients, lastMs}: lastMs = ms from arm to the last resync
//   stop            -> stop editing, churning and idling; every idle document gets its clients back
//   tokens {path}   -> write {doc: [token, ...]} of every edit made to path
//   fresh           -> a new client per document syncs; replies {texts: {doc: text}}
//   quit            -> destroy every client, reply, exit 0
// Every wait is bounded; the process exits when stdin closes.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import fs from 'node:fs'
import readline from 'node:readline'

process.setMaxListeners(0) // each provider adds an exit handler
const spec = JSON.parse(process.argv[2])

// The editor page's reconnect policy (web/src/connection.js: equal jitter, [cap/2, cap]) for the
// `jitter` share of the clients; a copy of it if that module cannot be loaded here.
let backoffDelay = (attempt) => {
  const cap = Math.min(10000, 400 * 2 ** attempt)
  return Math.round(cap / 2 + Math.random() * (cap / 2))
}
let pagePolicy = 'copy'
try {
  backoffDelay = (await import('../../web/src/connection.js')).backoffDelay
  pagePolicy = 'web/src/connection.js'
} catch {}
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const now = () => performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const pick = (list) => list[Math.floor(Math.random() * list.length)]

let serial = 0
const clients = new Set() // live clients
const byDoc = new Map(spec.docs.map((name) => [name, new Set()]))
const tokens = new Map(spec.docs.map((name) => [name, []]))
const idle = new Set() // documents whose clients are away
const stats = { joins: 0, leaves: 0, abrupt: 0, edits: 0, offlineEdits: 0, reconnects: 0, awarenessSets: 0 }
let armedAt = -1

function join (doc) {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(spec.url, doc, ydoc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true
  })
  const client = {
    id: ++serial, doc, ydoc, provider, text: ydoc.getText('content'), seq: 0,
    syncs: 0, dropped: false, resyncedAt: -1
  }
  provider.awareness.setLocalState({ user: { name: `c${client.id}` }, cursor: null })
  client.jitter = Math.random() < (spec.jitter || 0)
  client.attempt = 0
  provider.on('status', ({ status }) => {
    if (status === 'disconnected') client.dropped = true
  })
  if (client.jitter) {
    // As the page does: switch the provider's own retry off before its timer fires, and
    // connect from our own timer after a jittered delay.
    provider.on('connection-close', () => {
      if (!clients.has(client)) return
      provider.shouldConnect = false
      clearTimeout(client.retry)
      client.retry = setTimeout(() => { if (clients.has(client)) provider.connect() },
        backoffDelay(client.attempt++))
    })
  }
  provider.on('sync', (synced) => {
    if (!synced) return
    client.attempt = 0
    client.syncs++
    if (client.syncs > 1) stats.reconnects++
    if (armedAt >= 0 && client.dropped && client.resyncedAt < 0) client.resyncedAt = now()
  })
  clients.add(client)
  byDoc.get(doc).add(client)
  stats.joins++
  return client
}

function leave (client, abrupt = false) {
  clients.delete(client)
  clearTimeout(client.retry)
  byDoc.get(client.doc).delete(client)
  if (abrupt && client.provider.ws) {
    // Gone without a goodbye (a closed laptop): no awareness removal, no close handshake; only
    // the server can tell the others. Its edits went out long before (see `leaving`).
    client.provider.ws.terminate()
    stats.abrupt++
  }
  client.provider.destroy() // queued frames go out before the close frame
  client.ydoc.destroy()
  stats.leaves++
}

function edit (client, offline = false) {
  if (client.leaving) return false
  if (!offline && !(client.provider.wsconnected && client.provider.synced)) return false
  const token = `k${client.id}x${client.seq++};`
  const text = client.text.toString()
  const at = text.indexOf(';', Math.floor(Math.random() * (text.length + 1)))
  client.text.insert(at < 0 ? text.length : at + 1, token)
  tokens.get(client.doc).push(token)
  if (offline) stats.offlineEdits++
  else stats.edits++
  return true
}

function setAwareness (client) {
  const len = client.text.length
  client.provider.awareness.setLocalStateField('cursor', { pos: Math.floor(Math.random() * (len + 1)) })
  stats.awarenessSets++
}

async function connectAll () {
  const batch = spec.connectBatch || 100
  const all = []
  for (const doc of spec.docs) for (let i = 0; i < spec.perDoc; i++) all.push(doc)
  for (let i = 0; i < all.length; i += batch) {
    const joined = all.slice(i, i + batch).map(join)
    const deadline = now() + 60000
    while (joined.some((c) => !c.provider.synced) && now() < deadline) await sleep(20)
  }
}

// -- the soak's steady load ---------------------------------------------------------------

let soakTimers = []
function startSoak (soak) {
  const tick = soak.tick || 100
  const each = (every) => Math.max(0, clients.size * tick / every)
  let editDebt = 0
  let awarenessDebt = 0
  soakTimers.push(setInterval(() => {
    editDebt += each(soak.editEvery)
    awarenessDebt += each(soak.awarenessEvery)
    const live = [...clients]
    if (live.length === 0) return
    for (; editDebt >= 1; editDebt--) edit(pick(live))
    for (; awarenessDebt >= 1; awarenessDebt--) setAwareness(pick(live))
  }, tick))
  if (soak.churnEvery > 0) {
    let round = 0
    soakTimers.push(setInterval(() => {
      const live = [...clients].filter((c) => !idle.has(c.doc) && !c.leaving)
      const abrupt = round++ % 2 === 1 // every other round, the leavers just vanish
      for (let i = 0; i < soak.churnCount && live.length > 0; i++) {
        const client = live.splice(Math.floor(Math.random() * live.length), 1)[0]
        client.leaving = true // no more edits: whatever it sent is on the wire before it goes
        setTimeout(() => {
          if (!clients.has(client)) return // its document went idle meanwhile
          leave(client, abrupt)
          join(client.doc)
        }, 500)
      }
    }, soak.churnEvery))
  }
  if (soak.idleEvery > 0) {
    let next = 0
    soakTimers.push(setInterval(() => {
      const doc = spec.docs[next++ % spec.docs.length]
      if (idle.has(doc)) return
      idle.add(doc)
      const away = [...byDoc.get(doc)]
      away.forEach(leave)
      const back = setTimeout(() => {
        idle.delete(doc)
        for (let i = 0; i < away.length; i++) join(doc)
      }, soak.idleFor)
      idleReturns.set(doc, { back, count: away.length })
    }, soak.idleEvery))
  }
}
const idleReturns = new Map()

function stopSoak () {
  soakTimers.forEach(clearInterval)
  soakTimers = []
  for (const [doc, { back, count }] of idleReturns) {
    if (!idle.has(doc)) continue
    clearTimeout(back)
    idle.delete(doc)
    for (let i = 0; i < count; i++) join(doc)
  }
  idleReturns.clear()
}

// Awareness states a client of each document holds beyond the clients live there (a server that
// kept departed clients' states would hand them to every newcomer).
function awarenessExcess () {
  let excess = 0
  let states = 0
  for (const [, members] of byDoc) {
    const synced = [...members].filter((c) => c.provider.synced)
    if (synced.length === 0) continue
    const seen = synced[synced.length - 1].provider.awareness.getStates().size
    states += seen
    excess += Math.max(0, seen - members.size)
  }
  return { excess, states }
}

function status () {
  let connected = 0
  let synced = 0
  for (const c of clients) {
    if (c.provider.wsconnected) connected++
    if (c.provider.synced) synced++
  }
  const aw = awarenessExcess()
  return {
    clients: clients.size, connected, synced, idleDocs: idle.size, ...stats,
    awarenessStates: aw.states, awarenessExcess: aw.excess,
    rss: process.memoryUsage().rss, jittered: [...clients].filter((c) => c.jitter).length,
    pagePolicy
  }
}

async function fresh () {
  const texts = {}
  const probes = spec.docs.map((doc) => {
    const ydoc = new Y.Doc()
    const provider = new WebsocketProvider(spec.url, doc, ydoc, { WebSocketPolyfill: WebSocket, disableBc: true })
    return { doc, ydoc, provider }
  })
  const deadline = now() + 60000
  while (probes.some((p) => !p.provider.synced) && now() < deadline) await sleep(20)
  for (const p of probes) {
    texts[p.doc] = p.provider.synced ? p.ydoc.getText('content').toString() : null
    p.provider.destroy()
    p.ydoc.destroy()
  }
  return { texts }
}

async function handle (msg) {
  switch (msg.cmd) {
    case 'status':
      return status()
    case 'edit': {
      let made = 0
      for (const c of clients) if (edit(c, !!msg.offline)) made++
      return { made }
    }
    case 'arm':
      armedAt = now()
      for (const c of clients) { c.dropped = false; c.resyncedAt = -1 }
      return { armed: true }
    case 'armed': {
      let resynced = 0
      let last = 0
      for (const c of clients) {
        if (c.resyncedAt >= 0 && c.provider.synced) {
          resynced++
          last = Math.max(last, c.resyncedAt - armedAt)
        }
      }
      return { all: resynced === clients.size, resynced, clients: clients.size, lastMs: last }
    }
    case 'stop':
      stopSoak()
      return { stopped: true }
    case 'tokens':
      fs.writeFileSync(msg.path, JSON.stringify(Object.fromEntries(tokens)))
      return { path: msg.path, count: [...tokens.values()].reduce((n, t) => n + t.length, 0) }
    case 'fresh':
      return await fresh()
    case 'quit':
      stopSoak()
      for (const c of [...clients]) leave(c)
      setTimeout(() => process.exit(0), 200)
      return { quit: true }
    default:
      throw new Error(`unknown command ${msg.cmd}`)
  }
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const msg = JSON.parse(line)
  try {
    emit({ id: msg.id, ...(await handle(msg)) })
  } catch (err) {
    emit({ id: msg.id, error: String(err && err.stack ? err.stack : err) })
  }
}).on('close', () => process.exit(0))

await connectAll()
if (spec.soak) startSoak(spec.soak)
emit({ event: 'ready', ...status() })
