// A test peer's command loop: one JSON command per stdin line, one JSON answer per
// stdout line ({id, ...result} or {id, error}); stdin closing ends the process.
import readline from 'node:readline'

export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

export function answer (commands) {
  const lines = readline.createInterface({ input: process.stdin })
  lines.on('line', async (line) => {
    let msg
    try {
      msg = JSON.parse(line)
      const run = commands[msg.cmd]
      if (!run) throw new Error(`unknown command ${msg.cmd}`)
      emit({ id: msg.id, ...(await run(msg)) })
      if (msg.cmd === 'quit') process.exit(0)
    } catch (err) {
      emit({ id: msg && msg.id, error: String(err && err.stack ? err.stack : err) })
    }
  })
  // The test runner closing our stdin means it is gone: do not linger.
  lines.on('close', () => process.exit(0))
}
