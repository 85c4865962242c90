'use strict';
// The little that produce.js, consume.js and consume_group.js share: loading
// the logstore.v1 .proto files at run time with @grpc/proto-loader (no code
// generation), making Log, Admin and Groups clients for a broker address, and
// printing a record as one JSON line.
//
// Messages are plain objects shaped by LOADER_OPTIONS:
// - Field names are the .proto names (`base_offset`, not `baseOffset`), so
//   the comments in proto/logstore/v1/*.proto apply word for word.
// - int64 fields arrive as decimal strings; `int64()` turns one into a
//   Number, and refuses (instead of rounding) beyond 2^53.
// - `bytes` fields are Buffers; enums are their names.
// - Unset scalars read as their zero value, EXCEPT `optional` fields: an
//   absent `Record.key` or `Record.value` stays undefined, which is how a
//   null key or value is told from an empty one.
//
// TLS and tokens come from the environment, the same variables the logstore
// CLI reads (docs/security.md):
// - LOGSTORE_TLS_CA=FILE: connect with TLS, trusting this CA (PEM);
//   LOGSTORE_TLS=1: TLS trusting the system's CAs.
// - LOGSTORE_TLS_CERT=FILE and LOGSTORE_TLS_KEY=FILE: a client certificate
//   and its key, for a broker that requires mutual TLS.
// - LOGSTORE_TOKEN=TOKEN: sent as `authorization: Bearer TOKEN` on every call
//   (by a client interceptor, so it also works without TLS, in clear text).
//
// Not done here: retries, reloading certificates.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const DEFAULT_BROKER = '127.0.0.1:50051';

const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

// The broker may send messages up to its own limit (one batch can be tens of
// MiB), well past grpc-js's 4 MiB default: accept any size.
const CHANNEL_OPTIONS = {
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
};

function loadPackage() {
  const files = fs
    .readdirSync(path.join(PROTO_ROOT, 'logstore', 'v1'))
    .filter((name) => name.endsWith('.proto'))
    .sort()
    .map((name) => `logstore/v1/${name}`);
  const definition = protoLoader.loadSync(files, LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition).logstore.v1;
}

// `--broker` if given, else $LOGSTORE_BROKER, else 127.0.0.1:50051.
function brokerAddress(fromArgs) {
  return fromArgs || process.env.LOGSTORE_BROKER || DEFAULT_BROKER;
}

// A PEM file named by an environment variable, or null when it is not set.
function readPem(env, variable) {
  const file = env[variable];
  if (!file) return null;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`${variable}: cannot read ${file}: ${err.message}`);
  }
}

// Adds `authorization: Bearer <token>` to the metadata of every call.
function bearerToken(token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

// Channel credentials and interceptors from the LOGSTORE_TLS* and
// LOGSTORE_TOKEN variables (see the top of this file).
function securityFromEnv(env = process.env) {
  const ca = readPem(env, 'LOGSTORE_TLS_CA');
  const cert = readPem(env, 'LOGSTORE_TLS_CERT');
  const key = readPem(env, 'LOGSTORE_TLS_KEY');
  if (Boolean(cert) !== Boolean(key)) {
    throw new UsageError('LOGSTORE_TLS_CERT and LOGSTORE_TLS_KEY go together (mutual TLS needs both)');
  }
  const tls = Boolean(ca || cert) || /^(1|true|yes|on)$/i.test(env.LOGSTORE_TLS || '');
  const credentials = tls ? grpc.credentials.createSsl(ca, key, cert) : grpc.credentials.createInsecure();
  const token = (env.LOGSTORE_TOKEN || '').trim();
  return { credentials, interceptors: token ? [bearerToken(token)] : [] };
}

// Log, Admin and Groups clients sharing one channel to `address`.
function connect(address) {
  const v1 = loadPackage();
  const { credentials, interceptors } = securityFromEnv();
  const options = { ...CHANNEL_OPTIONS, interceptors };
  const log = new v1.Log(address, credentials, options);
  const shared = { ...options, channelOverride: log.getChannel() };
  const admin = new v1.Admin(address, credentials, shared);
  const groups = new v1.Groups(address, credentials, shared);
  return { log, admin, groups, close: () => log.close() };
}

// Calls a unary RPC and resolves with its response (rejects with the gRPC error).
function unary(client, method, request, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutMs);
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

// An int64 (a decimal string with longs: String, or a BigInt) as an exact Number.
function int64(value) {
  const big = BigInt(value);
  if (big > MAX_SAFE || big < -MAX_SAFE) {
    throw new RangeError(`int64 ${big} is beyond 2^53 and cannot be printed exactly as a JSON number`);
  }
  return Number(big);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

// Bytes as a UTF-8 string; refuses (rather than mangling) anything else.
function text(bytes, what, offset) {
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new Error(`the ${what} of the record at offset ${offset} is not UTF-8; this example prints text only`);
  }
}

// A Record (records.proto) at `offset` of a partition as the fields of one
// printed JSON line: {topic, partition, offset, timestamp, key, value,
// headers}.  `offset` is a BigInt or an int64 string.
function recordFields(topic, partition, offset, record) {
  // An `optional` field the record does not carry is undefined: null, not "".
  const has = (field) => Object.prototype.hasOwnProperty.call(record, field) && record[field] != null;
  return {
    topic,
    partition,
    offset: int64(offset),
    timestamp: int64(record.timestamp_ms),
    key: has('key') ? text(record.key, 'key', offset) : null,
    value: has('value') ? text(record.value, 'value', offset) : null,
    headers: record.headers.map((header) => [header.name, text(header.value, `header "${header.name}"`, offset)]),
  };
}

// "NOT_FOUND: topic 'x' does not exist" for a gRPC error.
function describeError(err) {
  if (err && typeof err.code === 'number') {
    return `${grpc.status[err.code] || err.code}: ${err.details || err.message}`;
  }
  return String(err && err.message ? err.message : err);
}

// A non-negative integer command-line value, or a usage error.
function parseCount(option, text) {
  if (!/^\d+$/.test(text || '')) {
    throw new UsageError(`${option} needs a non-negative integer, got ${JSON.stringify(text)}`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new UsageError(`${option} is too large: ${text}`);
  return value;
}

class UsageError extends Error {}

// Bad input data (not the command line): reported like a usage error, without the usage.
class InputError extends UsageError {}

// Runs `main`, printing usage and input errors (exit 2) and gRPC failures
// (exit 1) on stderr.
function run(usage, main) {
  main().catch((err) => {
    if (err instanceof UsageError) {
      const hint = err instanceof InputError ? '' : `${usage}\n`;
      process.stderr.write(`${path.basename(process.argv[1])}: ${err.message}\n${hint}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`${path.basename(process.argv[1])}: ${describeError(err)}\n`);
      process.exitCode = 1;
    }
  });
}

module.exports = {
  grpc,
  PROTO_ROOT,
  LOADER_OPTIONS,
  brokerAddress,
  securityFromEnv,
  connect,
  unary,
  int64,
  recordFields,
  describeError,
  parseCount,
  UsageError,
  InputError,
  run,
};
