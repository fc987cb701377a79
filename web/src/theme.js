// The editor's look. Colours are CSS custom properties (style.css), so the light
// and dark themes follow `prefers-color-scheme` without reconfiguring the editor.
import { EditorView } from '@codemirror/view'
import { HighlightStyle, syntaxHighlighting } from '@codemirror/language'
import { tags as t } from '@lezer/highlight'

const editorTheme = EditorView.theme({
  '&': {
    color: 'var(--text)',
    backgroundColor: 'var(--paper)',
    height: '100%',
    fontSize: '15px'
  },
  '&.cm-focused': { outline: 'none' },
  '.cm-scroller': {
    fontFamily: 'var(--mono)',
    lineHeight: '1.65'
  },
  '.cm-content': {
    padding: '28px 0 40vh',
    caretColor: 'var(--accent)'
  },
  '.cm-line': { padding: '0 28px 0 12px' },
  '.cm-cursor, .cm-dropCursor': { borderLeftColor: 'var(--accent)', borderLeftWidth: '2px' },
  '&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground, ::selection':
    { backgroundColor: 'var(--selection) !important' },
  '.cm-gutters': {
    backgroundColor: 'var(--paper)',
    color: 'var(--faint)',
    border: 'none',
    paddingLeft: '8px'
  },
  '.cm-lineNumbers .cm-gutterElement': { padding: '0 8px 0 12px', minWidth: '32px' },
  '.cm-activeLine': { backgroundColor: 'var(--active-line)' },
  '.cm-activeLineGutter': { backgroundColor: 'transparent', color: 'var(--muted)' },
  '.cm-searchMatch': { backgroundColor: 'var(--search-match)' },
  '.cm-panels': { backgroundColor: 'var(--panel)', color: 'var(--text)' },
  '.cm-panels.cm-panels-bottom': { borderTop: '1px solid var(--border)' },
  '.cm-placeholder': { color: 'var(--faint)', fontStyle: 'italic' },
  // Remote carets: the name label is always shown (y-codemirror.next shows it on hover).
  '.cm-ySelectionCaret': { borderLeftWidth: '2px', borderRightWidth: '0', marginLeft: '-1px', marginRight: '-1px' },
  '.cm-ySelectionCaretDot': { display: 'none' },
  '.cm-ySelectionInfo': {
    opacity: '1',
    top: '-1.45em',
    left: '-2px',
    padding: '1px 6px',
    borderRadius: '4px 4px 4px 0',
    fontFamily: 'var(--sans)',
    fontSize: '11px',
    fontWeight: '600',
    lineHeight: '1.4',
    color: '#fff',
    boxShadow: '0 1px 2px rgb(0 0 0 / 0.2)',
    pointerEvents: 'none'
  },
  // The verified sign-in after the name: same label, quieter.
  '.cm-ySelectionSub': { marginLeft: '5px', fontWeight: '500', opacity: '0.85' }
})

const highlight = HighlightStyle.define([
  { tag: t.heading1, fontWeight: '700', fontSize: '1.3em', color: 'var(--hl-heading)' },
  { tag: t.heading2, fontWeight: '700', fontSize: '1.15em', color: 'var(--hl-heading)' },
  { tag: t.heading3, fontWeight: '700', fontSize: '1.08em', color: 'var(--hl-heading)' },
  { tag: [t.heading4, t.heading5, t.heading6], fontWeight: '700', color: 'var(--hl-heading)' },
  { tag: t.strong, fontWeight: '700' },
  { tag: t.emphasis, fontStyle: 'italic' },
  { tag: t.strikethrough, textDecoration: 'line-through' },
  { tag: [t.link, t.url], color: 'var(--hl-link)', textDecoration: 'underline' },
  { tag: t.monospace, color: 'var(--hl-code)', backgroundColor: 'var(--code-bg)', borderRadius: '3px' },
  { tag: t.quote, color: 'var(--muted)', fontStyle: 'italic' },
  { tag: [t.processingInstruction, t.meta, t.contentSeparator], color: 'var(--faint)' },
  { tag: [t.keyword, t.operator], color: 'var(--hl-keyword)' },
  { tag: [t.string, t.special(t.string)], color: 'var(--hl-string)' },
  { tag: [t.number, t.bool, t.atom], color: 'var(--hl-number)' },
  { tag: t.comment, color: 'var(--faint)', fontStyle: 'italic' },
  { tag: [t.typeName, t.className, t.tagName], color: 'var(--hl-type)' },
  { tag: [t.propertyName, t.attributeName], color: 'var(--hl-property)' }
])

export const theme = [editorTheme, syntaxHighlighting(highlight)]
