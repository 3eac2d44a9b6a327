// The E2B SDK scenarios of issue 7, run with the official, unmodified JS SDK
// (@e2b/code-interpreter) against a real codebox server. Same environment as
// scenario.py (E2B_API_URL + E2B_SANDBOX_URL, or E2B_DOMAIN and
// E2B_TEST_HOSTS_FILE, and E2B_API_KEY). Every check throws on failure.
import { appendFileSync } from 'node:fs'
import { Sandbox } from '@e2b/code-interpreter'
import { CommandExitError } from 'e2b'

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`)
  console.log(`ok - ${what}`)
}

function addHosts(id) {
  const hosts = process.env.E2B_TEST_HOSTS_FILE
  if (!hosts) return
  const domain = process.env.E2B_DOMAIN
  appendFileSync(hosts, `127.0.0.1 49983-${id}.${domain} 49999-${id}.${domain}\n`)
}

async function runCode(sandbox) {
  await sandbox.runCode('x = 41')
  check((await sandbox.runCode('x + 1')).text === '42', 'runCode keeps state across calls')
  const lines = []
  const execution = await sandbox.runCode("print('hello')", { onStdout: (m) => lines.push(m.line) })
  check(lines.join('') === 'hello\n', 'onStdout receives the output')
  check(execution.logs.stdout.join('') === 'hello\n', 'logs.stdout has the output')
  const error = (await sandbox.runCode('1/0')).error
  check(error && error.name === 'ZeroDivisionError', 'an error has its name')
  check(error.traceback.includes('ZeroDivisionError'), 'an error has its traceback')
  check((await sandbox.runCode("import os; os.environ['FOO']")).text === 'bar', 'envs reach the code')
  const chart = await sandbox.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()')
  check(chart.results.some((r) => r.png && r.png.startsWith('iVBOR')), 'a matplotlib chart comes back as png')
}

async function contexts(sandbox) {
  const context = await sandbox.createCodeContext()
  await sandbox.runCode('y = 5', { context })
  check((await sandbox.runCode('y * 2', { context })).text === '10', 'a created context keeps state')
  const ids = (await sandbox.listCodeContexts()).map((c) => c.id)
  check(ids.includes(context.id), 'listCodeContexts lists it')
  await sandbox.removeCodeContext(context)
}

async function files(sandbox) {
  await sandbox.files.write('/home/user/a.txt', 'hi')
  check((await sandbox.files.read('/home/user/a.txt')) === 'hi', 'files.write then files.read')
  const names = (await sandbox.files.list('/home/user')).map((e) => e.name)
  check(names.includes('a.txt'), 'files.list shows the file')
  check(await sandbox.files.exists('/home/user/a.txt'), 'files.exists is true')
  await sandbox.files.remove('/home/user/a.txt')
  check(!(await sandbox.files.exists('/home/user/a.txt')), 'files.remove removes it')
}

async function commands(sandbox) {
  const result = await sandbox.commands.run('echo hi')
  check(result.stdout === 'hi\n' && result.exitCode === 0, 'commands.run returns stdout and 0')
  let raised = null
  try {
    await sandbox.commands.run('exit 3')
  } catch (error) {
    raised = error
  }
  check(raised instanceof CommandExitError && raised.exitCode === 3, 'a non-zero exit throws CommandExitError')
  const handle = await sandbox.commands.run('sleep 60', { background: true })
  check((await handle.kill()) === true, 'a background command can be killed')
}

async function lifecycle(sandbox) {
  await sandbox.setTimeout(240_000)
  const info = await sandbox.getInfo()
  check(info.sandboxId === sandbox.sandboxId, 'getInfo returns the sandbox')
  check(info.metadata.suite === 'e2b-js', 'getInfo returns the metadata')
  const paginator = Sandbox.list()
  const ids = []
  while (paginator.hasNext) ids.push(...(await paginator.nextItems()).map((s) => s.sandboxId))
  check(ids.includes(sandbox.sandboxId), 'Sandbox.list finds the sandbox')
  check(await sandbox.isRunning(), 'isRunning is true')
}

const started = Date.now()
const sandbox = await Sandbox.create({ timeoutMs: 180_000, metadata: { suite: 'e2b-js' }, envs: { FOO: 'bar' } })
addHosts(sandbox.sandboxId)
try {
  await runCode(sandbox)
  await contexts(sandbox)
  await files(sandbox)
  await commands(sandbox)
  await lifecycle(sandbox)
} finally {
  await sandbox.kill()
}
// Only a sandbox that the kill above ended makes this false.
check((await Sandbox.kill(sandbox.sandboxId)) === false, 'kill ended it: killing it again returns false')
console.log(`all js scenarios passed in ${((Date.now() - started) / 1000).toFixed(1)}s`)
