// Whether this page's edits are saved on the server, and whether the browser's
// offline copy still belongs to the server's document. Two messages of collab's
// own (README, "Saved acknowledgements"), which the server sends only to a
// client that sent them first:
//
//   102 save        [102, varbytes(varuint n)]: "tell me when everything I sent
//                   before this is durable"; the server answers with the same
//                   bytes once it is (behind the records before it, in order).
//   103 generation  [103, varstring g]: "my copy is of generation g" ("" = none
//                   known), sent first on every connection. The server answers
//                   with its generation, or closes with 4404 when g is another
//                   one: the document was deleted since, so the copy must go.
import * as bc from 'lib0/broadcastchannel'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

export const MESSAGE_SAVE = 102
export const MESSAGE_GENERATION = 103

const frame = (type, write) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, type)
  write(encoder)
  return encoding.toUint8Array(encoder)
}

/** @typedef {'saved' | 'saving' | 'offline'} SaveState */

export class SaveTracker {
  /**
   * @param {object} opts
   * @param {import('y-websocket').WebsocketProvider} opts.provider created with `connect: false`
   * @param {import('y-indexeddb').IndexeddbPersistence} opts.offlineCopy
   * @param {boolean} opts.readOnly nothing of ours is ever saved: ask nothing
   * @param {() => void} opts.onChange the state (or `generation`) changed
   */
  constructor ({ provider, offlineCopy, readOnly, onChange }) {
    this.provider = provider
    this.offlineCopy = offlineCopy
    this.readOnly = readOnly
    this.onChange = onChange
    this.changes = 0 // local changes counted so far (typing, undo, an unsaved offline copy)
    this.saved = 0 // every change up to this one is durable on the server
    this.asked = 0 // the change a request on this connection covers (> saved: in flight)
    this.asking = false // a request is about to be sent (end of this task)
    this.generation = '' // the server's generation of our copy ('' = none known)
    this.everChanged = false

    this.handleMessages()
    this.shareTabsPerGeneration()
    this.followConnection()
    provider.doc.on('update', (_update, origin) => {
      if (origin === provider || origin === offlineCopy) return // not our edit, or counted below
      this.changed()
    })

    /** Resolves once the offline copy told its generation and whether it has unsaved edits. */
    this.ready = Promise.race([
      offlineCopy.whenSynced.then(async () => {
        this.generation = (await offlineCopy.get('generation')) || ''
        if (await offlineCopy.get('unsaved')) this.changed()
      }),
      new Promise((resolve) => setTimeout(resolve, 3000)) // no IndexedDB: go on without it
    ]).catch(() => {}).then(() => this.joinTabs())
  }

  handleMessages () {
    const { provider } = this
    provider.messageHandlers[MESSAGE_SAVE] = (_encoder, decoder) => {
      const token = decoding.createDecoder(decoding.readVarUint8Array(decoder))
      this.acknowledged(decoding.readVarUint(token))
    }
    provider.messageHandlers[MESSAGE_GENERATION] = (_encoder, decoder) => {
      this.generation = decoding.readVarString(decoder)
      this.remember('generation', this.generation)
      this.joinTabs()
    }
  }

  /**
   * Other tabs of this browser share the document over a BroadcastChannel: one per
   * generation, so a tab holding a copy of a deleted document never hands it to a
   * fresh one; a refused copy leaves it for good (`forget`).
   */
  shareTabsPerGeneration () {
    const { provider } = this
    this.tabs = provider.bcChannel
    this.refused = false
    const connectBc = provider.connectBc.bind(provider)
    provider.connectBc = () => { if (!this.refused) connectBc() }
  }

  /** Move to the tabs' channel of our generation (once known, and when it changes). */
  joinTabs () {
    const { provider } = this
    const channel = `${this.tabs}#${this.generation}`
    if (provider.bcChannel === channel) return
    const joined = provider.bcconnected
    if (joined) {
      // Not provider.disconnectBc(): it also tells the server our presence is gone,
      // and the others would not see us again until our next awareness renewal.
      bc.unsubscribe(provider.bcChannel, provider._bcSubscriber)
      provider.bcconnected = false
    }
    provider.bcChannel = channel
    if (joined) provider.connectBc() // else connect() joins it
  }

  followConnection () {
    const { provider } = this
    // 'connected' is emitted before the provider sends its sync step 1, so the
    // server reads our generation before anything of our copy.
    provider.on('status', ({ status }) => {
      if (status === 'connected') {
        provider.ws.send(frame(MESSAGE_GENERATION, (e) => encoding.writeVarString(e, this.generation)))
      }
    })
    provider.on('sync', (synced) => {
      if (!synced) return
      this.asked = this.saved // our step 2 went out before the server's: covered by a new request
      this.request()
    })
    provider.on('connection-close', () => {
      this.asked = this.saved
      this.onChange()
    })
  }

  /** The copy was refused (its document is deleted): keep it to this tab. */
  forget () {
    this.refused = true
    this.provider.disconnectBc()
  }

  /** @returns {SaveState} */
  get state () {
    if (this.changes <= this.saved) return 'saved'
    return this.provider.wsconnected ? 'saving' : 'offline'
  }

  /** True while some edit of this page is not durable on the server yet. */
  get unsaved () {
    return !this.readOnly && this.changes > this.saved
  }

  changed () {
    if (this.readOnly) return
    if (this.changes === this.saved) this.remember('unsaved', 1)
    this.changes++
    this.everChanged = true
    this.request()
    this.onChange()
  }

  acknowledged (n) {
    if (n <= this.saved) return
    this.saved = Math.min(n, this.changes)
    if (this.saved === this.changes) this.remember('unsaved', 0)
    this.request()
    this.onChange()
  }

  /** Ask for an acknowledgement of every change so far: one request in flight at a time. */
  request () {
    if (this.readOnly || this.asking || this.asked > this.saved || this.changes <= this.saved) return
    this.asking = true
    // At the end of this task: the provider sends the update itself first (its
    // 'update' handler runs before ours), so the request follows it on the socket.
    queueMicrotask(() => {
      this.asking = false
      const { provider } = this
      const ws = provider.ws
      if (!provider.synced || !provider.wsconnected || !ws || ws.readyState !== WebSocket.OPEN) return
      if (this.asked > this.saved || this.changes <= this.saved) return
      this.asked = this.changes
      const token = encoding.encode((e) => encoding.writeVarUint(e, this.asked))
      ws.send(frame(MESSAGE_SAVE, (e) => encoding.writeVarUint8Array(e, token)))
    })
  }

  remember (key, value) {
    this.offlineCopy.set(key, value).catch(() => {}) // cleared or no IndexedDB: nothing to keep
  }
}

const SAVED_TEXT = {
  saved: ['Saved', 'Every edit you made is stored on the server'],
  saving: ['Saving…', 'Sent; waiting for the server to store it'],
  offline: ['Not saved — offline, kept in this browser', 'Your edits are kept in this browser and are saved when the connection is back'],
  lost: ['Not saved', 'The server refused this connection: your latest edits are not stored there']
}

/**
 * "Saving…" / "Saved" / "Not saved — offline, kept in this browser" in `el`; returns
 * the function that renders it again. `data-state` changes at once; the words wait
 * 400 ms before "Saving…", so a quick save shows no flash on every keystroke.
 * @param {HTMLElement} el
 * @param {SaveTracker} tracker
 * @param {() => boolean} refused the server refused the connection (no retries)
 */
export const savedIndicator = (el, tracker, refused) => {
  let timer = 0
  const show = () => {
    timer = 0
    const [text, title] = SAVED_TEXT[el.dataset.state]
    if (el.textContent !== text) el.textContent = text
    el.title = title
  }
  return () => {
    const lost = refused() && tracker.unsaved
    const state = lost ? 'lost' : tracker.state
    // Refused with nothing unsaved (say, deleted after it was saved): nothing worth saying.
    el.hidden = tracker.readOnly || !tracker.everChanged || (refused() && !lost)
    el.dataset.state = state
    if (state === 'saving' && el.textContent !== SAVED_TEXT.saving[0]) {
      if (!timer) timer = setTimeout(show, 400)
    } else {
      clearTimeout(timer)
      show()
    }
  }
}
