// Remote carets and selections, with the person's name on each caret.
//
// This replaces y-codemirror.next's `yRemoteSelections` (same awareness fields,
// same CSS class names) to fix two things: its caret widget compares only the
// colour, so a renamed person kept their old label; and it puts remote colours
// into style attributes unchecked. It also publishes this page's own cursor in
// awareness, as the plugin it replaces did. A person signed in with a token also
// shows the identity the server verified (`user.sub`), after the name.
import * as Y from 'yjs'
import { Annotation } from '@codemirror/state'
import { Decoration, ViewPlugin, WidgetType } from '@codemirror/view'
import { ySyncFacet } from 'y-codemirror.next'
import { token } from './common.js'

const FALLBACK_COLOR = '#7c6f64'

/** A colour from another client, if it is plain hex (anything else could inject CSS). */
export const safeColor = (color) => (/^#[0-9a-f]{3,8}$/i.test(color) ? color : FALLBACK_COLOR)

/** A display name from another client: a string, not too long. */
export const safeName = (name) => String(name || 'Anonymous').slice(0, 40)

/**
 * The identity the server verified for a person, or null.
 *
 * With access control on (this page has a token, so every connection has one) the
 * server writes `user.sub` into every state it relays, over anything a client
 * claimed there. Without it nobody sets `user.sub` but the client itself, so it
 * is never shown.
 */
export const verifiedSub = (user, withToken = Boolean(token)) =>
  withToken && user && typeof user.sub === 'string' && user.sub !== '' ? user.sub.slice(0, 64) : null

class CaretWidget extends WidgetType {
  constructor (color, name, sub) {
    super()
    this.color = color
    this.name = name
    this.sub = sub
  }

  toDOM () {
    const caret = document.createElement('span')
    caret.className = 'cm-ySelectionCaret'
    caret.style.borderColor = this.color
    caret.style.backgroundColor = this.color
    const info = document.createElement('span')
    info.className = 'cm-ySelectionInfo'
    info.textContent = this.name
    if (this.sub) {
      const badge = document.createElement('span')
      badge.className = 'cm-ySelectionSub'
      badge.textContent = `\u2713 ${this.sub}`
      info.append(badge)
    }
    caret.append('\u2060', info, '\u2060') // word joiners keep the caret from breaking lines
    return caret
  }

  eq (other) {
    return other.color === this.color && other.name === this.name && other.sub === this.sub
  }

  get estimatedHeight () { return -1 }

  ignoreEvent () { return true }
}

const awarenessChanged = Annotation.define()

const mark = (from, to, colorLight) => Decoration.mark({
  attributes: { style: `background-color: ${colorLight}` },
  class: 'cm-ySelection'
}).range(from, to)

class RemoteCarets {
  constructor (view) {
    this.conf = view.state.facet(ySyncFacet)
    this.awareness = this.conf.awareness
    this.decorations = Decoration.none
    this.listener = ({ added, updated, removed }) => {
      const me = this.awareness.doc.clientID
      if (added.concat(updated, removed).some((id) => id !== me)) {
        view.dispatch({ annotations: [awarenessChanged.of(true)] })
      }
    }
    this.awareness.on('change', this.listener)
  }

  destroy () {
    this.awareness.off('change', this.listener)
  }

  update (update) {
    this.publishCursor(update)
    this.decorations = Decoration.set(this.remoteRanges(update.state.doc), true)
  }

  /** Put this page's selection in awareness (only while the editor has focus). */
  publishCursor (update) {
    const { ytext } = this.conf
    const local = this.awareness.getLocalState()
    if (local == null) return
    const hasFocus = update.view.hasFocus && update.view.dom.ownerDocument.hasFocus()
    if (!hasFocus) return
    const sel = update.state.selection.main
    const anchor = Y.createRelativePositionFromTypeIndex(ytext, sel.anchor)
    const head = Y.createRelativePositionFromTypeIndex(ytext, sel.head)
    const current = local.cursor
    if (current == null ||
        !Y.compareRelativePositions(Y.createRelativePositionFromJSON(current.anchor), anchor) ||
        !Y.compareRelativePositions(Y.createRelativePositionFromJSON(current.head), head)) {
      this.awareness.setLocalStateField('cursor', { anchor, head })
    }
  }

  /** Selection marks and caret widgets for everyone else. */
  remoteRanges (doc) {
    const { ytext } = this.conf
    const ydoc = ytext.doc
    const ranges = []
    this.awareness.getStates().forEach((state, clientID) => {
      const cursor = state.cursor
      if (clientID === ydoc.clientID || !cursor || !cursor.anchor || !cursor.head) return
      const anchor = Y.createAbsolutePositionFromRelativePosition(cursor.anchor, ydoc)
      const head = Y.createAbsolutePositionFromRelativePosition(cursor.head, ydoc)
      if (!anchor || !head || anchor.type !== ytext || head.type !== ytext) return
      const user = state.user || {}
      const color = safeColor(user.color)
      const colorLight = /^#[0-9a-f]{6}$/i.test(user.colorLight) || /^#[0-9a-f]{8}$/i.test(user.colorLight)
        ? user.colorLight
        : `${color.slice(0, 7)}33`
      const start = Math.min(anchor.index, head.index, doc.length)
      const end = Math.min(Math.max(anchor.index, head.index), doc.length)
      if (start < end) {
        const startLine = doc.lineAt(start)
        const endLine = doc.lineAt(end)
        if (startLine.number === endLine.number) {
          ranges.push(mark(start, end, colorLight))
        } else {
          if (start < startLine.to) ranges.push(mark(start, startLine.to, colorLight))
          for (let n = startLine.number + 1; n < endLine.number; n++) {
            ranges.push(Decoration.line({
              attributes: { style: `background-color: ${colorLight}`, class: 'cm-yLineSelection' }
            }).range(doc.line(n).from))
          }
          if (endLine.from < end) ranges.push(mark(endLine.from, end, colorLight))
        }
      }
      const at = Math.min(head.index, doc.length)
      ranges.push(Decoration.widget({
        side: head.index - anchor.index > 0 ? -1 : 1, // draw the local caret outside the remote selection
        widget: new CaretWidget(color, safeName(user.name), verifiedSub(user))
      }).range(at))
    })
    return ranges
  }
}

/** The extension: use it instead of y-codemirror.next's `yRemoteSelections`. */
export const remoteCarets = ViewPlugin.fromClass(RemoteCarets, { decorations: (v) => v.decorations })
