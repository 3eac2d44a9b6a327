// codebox JavaScript / TypeScript runner: one long-lived Node process of a context,
// driven by the agent. Cells run in this process's global context (declarations
// persist), top-level `await` is supported through Node's own REPL rewriting
// (`--expose-internals`; without it, an `await` cell runs in an async wrapper whose
// declarations do not persist), the last expression's value is the main result, and
// `display(value | {mime: data})` adds rich results.
//
// Channel (fd CODEBOX_RUNNER_FD, a socket): requests are NUL-terminated fields "x",
// seq, env pair count, name, value, ..., code; events are JSON lines (ready, start,
// result, error, done). TypeScript (CODEBOX_RUNNER_LANGUAGE=typescript) is transpiled
// by the `typescript` package from CODEBOX_TS_PATH (its directory), else resolved from
// NODE_PATH / the working directory. SIGINT interrupts a cell (synchronous code through
// vm's breakOnSigint, a pending await by abandoning it); the process survives.
'use strict';
(() => {
  const vm = require('vm');
  const util = require('util');
  const net = require('net');
  const Module = require('module');
  const fd = Number(process.env.CODEBOX_RUNNER_FD || 3);
  const maxResult = Number(process.env.CODEBOX_MAX_RESULT || 8 << 20);
  const typescript = process.env.CODEBOX_RUNNER_LANGUAGE === 'typescript';
  for (const name of ['CODEBOX_RUNNER_FD', 'CODEBOX_MAX_RESULT', 'CODEBOX_RUNNER_LANGUAGE']) {
    delete process.env[name];
  }
  let rewriteAwait = null;
  try {
    rewriteAwait = require('internal/repl/await').processTopLevelAwait;
  } catch (_) {}
  const channel = new net.Socket({ fd, readable: true, writable: true });
  const send = (event) => channel.write(JSON.stringify(event) + '\n');
  let current = null;

  const toText = (value) => (typeof value === 'string' ? value : JSON.stringify(value));
  const emit = (data, main) => {
    let size = 0;
    const clean = {};
    for (const [mime, value] of Object.entries(data)) {
      clean[mime] = Buffer.isBuffer(value) ? value.toString('base64') : toText(value);
      size += mime.length + clean[mime].length;
    }
    let truncated = false;
    if (size > maxResult) {
      const text = String(clean['text/plain'] || '').slice(0, 65536);
      for (const key of Object.keys(clean)) delete clean[key];
      clean['text/plain'] = `${text}\n[result of ${size} bytes over the cap]`;
      truncated = true;
    }
    send({ t: 'result', main, data: clean, truncated });
  };
  const isBundle = (value) =>
    value !== null && typeof value === 'object' && !Array.isArray(value) &&
    Object.keys(value).length > 0 && Object.keys(value).every((key) => key.includes('/'));
  const bundle = (value) => (isBundle(value) ? value : { 'text/plain': util.inspect(value) });
  globalThis.display = (...values) => values.forEach((value) => emit(bundle(value), false));
  globalThis.require = Module.createRequire(process.cwd() + '/');
  globalThis.module = { exports: {} };
  globalThis.exports = globalThis.module.exports;

  let ts = null;
  const transpile = (code) => {
    if (ts === null) {
      const where = process.env.CODEBOX_TS_PATH || 'typescript';
      try {
        ts = globalThis.require(where);
      } catch (cause) {
        const error = new Error(`the TypeScript compiler is not available (${where}): ${cause.message}`);
        error.name = 'TypeScriptUnavailable';
        throw error;
      }
    }
    const output = ts.transpileModule(code, {
      reportDiagnostics: true,
      fileName: 'cell.ts',
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, esModuleInterop: true },
    });
    const problems = (output.diagnostics || []).filter((d) => d.category === ts.DiagnosticCategory.Error);
    if (problems.length > 0) {
      const error = new SyntaxError(problems.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('\n'));
      error.name = 'TypeScriptError';
      throw error;
    }
    return output.outputText;
  };

  const interrupted = () => {
    const error = new Error('interrupted');
    error.name = 'KeyboardInterrupt';
    return error;
  };
  process.on('SIGINT', () => {
    if (current) current.interrupt(interrupted());
  });

  const evaluate = async (source, filename) => {
    let rewritten = null;
    if (source.includes('await')) {
      try {
        rewritten = rewriteAwait ? rewriteAwait(source) : `(async () => {\n${source}\n})()`;
      } catch (_) {
        rewritten = null;
      }
    }
    const options = { filename, breakOnSigint: true };
    if (rewritten === null) return new vm.Script(source, { filename }).runInThisContext(options);
    const promise = new vm.Script(rewritten, { filename }).runInThisContext(options);
    const cancel = new Promise((_, reject) => { current.interrupt = reject; });
    const settled = await Promise.race([promise, cancel]);
    return rewriteAwait && settled ? settled.value : undefined;
  };

  const report = (error) => {
    const isError = error instanceof Error;
    const name = isError ? error.name : 'Error';
    const value = isError ? error.message : util.inspect(error);
    // The runner's own frames ([eval], vm internals) say nothing about the user's code.
    const internal = /\[eval\]|node:vm|node:internal|node:events|node:domain|sigintHandlersWrap/;
    const stack = isError && error.stack ? error.stack : `${name}: ${value}`;
    const traceback = stack.split('\n').filter((line) => !internal.test(line)).join('\n');
    send({ t: 'error', name, value, traceback });
  };

  let counter = 0;
  const flushed = (stream) =>
    new Promise((resolve) => (stream.writableLength > 0 ? stream.once('drain', resolve) : resolve()));

  const runCell = async (seq, env, code) => {
    const saved = env.map(([name]) => [name, process.env[name]]);
    for (const [name, value] of env) process.env[name] = value;
    current = { interrupt: () => {} };
    send({ t: 'start', seq });
    counter += 1;
    try {
      const source = typescript ? transpile(code) : code;
      const value = await evaluate(source, `cell${counter}.${typescript ? 'ts' : 'js'}`);
      if (value !== undefined) emit(bundle(value), true);
    } catch (error) {
      if (error && error.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') report(interrupted());
      else report(error);
    }
    current = null;
    for (const [name, old] of saved) {
      if (old === undefined) delete process.env[name];
      else process.env[name] = old;
    }
    await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
    send({ t: 'done', seq });
  };

  // Requests, parsed from NUL-terminated fields; cells run one after another.
  let pending = Buffer.alloc(0);
  let fields = [];
  let queue = Promise.resolve();
  const parse = () => {
    for (;;) {
      const end = pending.indexOf(0);
      if (end < 0) return;
      fields.push(pending.subarray(0, end).toString('utf8'));
      pending = pending.subarray(end + 1);
      if (fields[0] !== 'x') {
        fields = [];
        continue;
      }
      const pairs = fields.length >= 3 ? Number(fields[2]) : -1;
      if (!Number.isInteger(pairs) || pairs < 0 || fields.length < 4 + 2 * pairs) continue;
      const env = [];
      for (let i = 0; i < pairs; i += 1) env.push([fields[3 + 2 * i], fields[4 + 2 * i]]);
      const [seq, code] = [Number(fields[1]), fields[3 + 2 * pairs]];
      fields = [];
      queue = queue.then(() => runCell(seq, env, code));
    }
  };
  channel.on('data', (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    parse();
  });
  channel.on('end', () => process.exit(0));
  channel.on('error', () => process.exit(0));
  process.on('uncaughtException', (error) => {
    process.stderr.write(`Uncaught ${util.inspect(error)}\n`);
  });
  process.on('unhandledRejection', (error) => {
    process.stderr.write(`Unhandled rejection: ${util.inspect(error)}\n`);
  });
  send({ t: 'ready' });
})();
