// Keeps a y-websocket provider connected: exponential backoff WITH jitter, and a
// clear stop when the server refuses us.
//
// The stock WebsocketProvider retries after exactly 100·2^n ms (capped), so when a
// server restarts every client comes back in the same instant. Here the provider
// is created with `connect: false`; after each close we switch its own retry off
// (`shouldConnect = false`, before its timer fires) and call `connect()` from our
// own timer instead, after a random delay in [cap/2, cap].
//
// A refused upgrade (HTTP 401/403 before the WebSocket opens) looks like any
// network failure to a browser (close code 1006), so after a failed upgrade we
// ask the HTTP API with the same token: 401/403 there means "stop, show why".

/** Milliseconds to wait before attempt number `attempt` (0-based): "equal jitter". */
export const backoffDelay = (attempt, { base = 400, max = 10000, random = Math.random } = {}) => {
  const cap = Math.min(max, base * 2 ** attempt)
  return Math.round(cap / 2 + random() * (cap / 2))
}

/**
 * Ask the server for the awareness states every `ms` while connected.
 *
 * y-websocket drops a connection on which nothing arrived for 30 s. A server
 * that does not echo a client's own awareness back to it (collab relays only to
 * the others) sends nothing to someone alone in a document, so without this the
 * page would go offline and back every 30 s. The answer is small (who is here).
 */
export const keepAlive = (provider, ms = 10000) => setInterval(() => {
  const ws = provider.ws
  if (provider.wsconnected && ws && ws.readyState === WebSocket.OPEN) ws.send(QUERY_AWARENESS)
}, ms)

const QUERY_AWARENESS = Uint8Array.of(3) // y-protocols message type 3, no payload

/** Upgrades refused while the server's HTTP side answers before we give up. */
const MAX_REFUSED_UPGRADES = 4

const REFUSALS = {
  4401: 'You are not signed in, or your access token has expired. Open the link again with a valid token.',
  4403: 'Your access token does not allow you to open this document.',
  4404: 'This document was deleted on the server.'
}

/**
 * @typedef {{ status: 'connecting' | 'online' | 'offline' | 'refused', retryAt?: number, message?: string }} ConnectionState
 */

export class Reconnector {
  /**
   * @param {import('y-websocket').WebsocketProvider} provider created with `connect: false`
   * @param {object} opts
   * @param {(state: ConnectionState) => void} opts.onChange
   * @param {() => Promise<Response>} opts.probe an HTTP request with the same credentials
   */
  constructor (provider, { onChange, probe }) {
    this.provider = provider
    this.onChange = onChange
    this.probe = probe
    this.attempt = 0
    this.refusedUpgrades = 0
    this.timer = 0
    this.opened = false
    this.everOnline = false
    /** @type {ConnectionState} */
    this.state = { status: 'connecting' }

    provider.on('status', ({ status }) => {
      if (status === 'connected') this.opened = true
    })
    provider.on('sync', (synced) => {
      if (!synced || !provider.wsconnected) return
      this.attempt = 0
      this.refusedUpgrades = 0
      this.everOnline = true
      this.set({ status: 'online' })
    })
    provider.on('connection-close', (event) => this.closed(event))
    window.addEventListener('online', () => {
      if (this.state.status !== 'refused') this.connectNow()
    })
  }

  /** Start connecting (or retry at once after a refusal or while waiting). */
  connectNow () {
    clearTimeout(this.timer)
    this.timer = 0
    if (this.provider.ws) return
    this.opened = false
    if (this.state.status !== 'offline') this.set({ status: 'connecting' })
    this.provider.connect()
  }

  /** @param {CloseEvent | null} event */
  closed (event) {
    // Stop the provider's own (jitter-free) retry: its timer finds shouldConnect false.
    this.provider.shouldConnect = false
    const opened = this.opened
    this.opened = false
    const code = event ? event.code : 0
    if (REFUSALS[code]) return this.refuse(REFUSALS[code], code)
    if (code >= 4400 && code < 4500) {
      return this.refuse(`The server closed the connection: ${event.reason || code}.`, code)
    }
    if (opened || event === null) return this.schedule()
    // The upgrade failed: server down, or a refusal the browser does not show us.
    this.probe().then(
      (res) => {
        if (res.status === 401) return this.refuse(REFUSALS[4401], 401)
        if (res.status === 403) return this.refuse(REFUSALS[4403], 403)
        if (res.status === 400) return this.refuse('The server does not accept this document name.', 400)
        if (++this.refusedUpgrades >= MAX_REFUSED_UPGRADES) {
          return this.refuse('The server keeps refusing the live connection (is a proxy blocking WebSockets, or is this origin not allowed?).', res.status)
        }
        this.schedule()
      },
      () => this.schedule() // no HTTP answer either: the server is down or we are offline
    )
  }

  schedule () {
    if (this.state.status === 'refused') return
    clearTimeout(this.timer)
    const delay = backoffDelay(this.attempt++)
    this.timer = setTimeout(() => this.connectNow(), delay)
    this.set({ status: this.everOnline || this.attempt > 1 ? 'offline' : 'connecting', retryAt: Date.now() + delay })
  }

  refuse (message, code) {
    clearTimeout(this.timer)
    this.timer = 0
    this.provider.shouldConnect = false
    this.set({ status: 'refused', message, code })
  }

  /** Leave the refused state and try again (a user's explicit "Reconnect"). */
  retry () {
    this.attempt = 0
    this.refusedUpgrades = 0
    this.set({ status: 'connecting' })
    this.connectNow()
  }

  /** @param {ConnectionState} state */
  set (state) {
    this.state = state
    this.onChange(state)
  }
}
