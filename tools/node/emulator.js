// Starts kinesalite or dynalite bound to 127.0.0.1 (their CLIs bind every interface).
// Usage: node emulator.js kinesis|dynamodb PORT [DATA_DIR]   (no DATA_DIR = in memory)
'use strict';
const [kind, portArg, dataDir] = process.argv.slice(2);
if (kind === '--help' || kind === '-h') {
  console.log('usage: node emulator.js kinesis|dynamodb PORT [DATA_DIR]\n\n' +
    'Starts kinesalite (kinesis) or dynalite (dynamodb) on 127.0.0.1:PORT; DATA_DIR keeps the\n' +
    'data on disk (none: in memory). Stops on SIGTERM/SIGINT. Started by tools/services.py.');
  process.exit(0);
}
if (!['kinesis', 'dynamodb'].includes(kind) || !portArg) {
  console.error('usage: node emulator.js kinesis|dynamodb PORT [DATA_DIR]');
  process.exit(2);
}
const opts = dataDir ? { path: dataDir } : {};
let server;
if (kind === 'kinesis') {
  Object.assign(opts, { createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 });
  server = require('kinesalite')(opts);
} else {
  Object.assign(opts, { createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  server = require('dynalite')(opts);
}
server.listen(Number(portArg), '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(`${kind} emulator listening on 127.0.0.1:${portArg}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// kinesalite rethrows a request's 'error' event (index.js: req.on('error', throw)), so a
// client killed mid-request (kill -9 fault tests) would take the emulator down with
// ECONNRESET/"aborted". AWS shrugs that off; so do we.
process.on('uncaughtException', (err) => {
  if (err && (err.code === 'ECONNRESET' || err.message === 'aborted')) {
    console.error(`client aborted a request (ignored): ${err.message}`);
    return;
  }
  console.error(err);
  process.exit(1);
});
