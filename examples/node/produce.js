#!/usr/bin/env node
'use strict';
// Produces each line of stdin as one record of TOPIC and prints, per record,
// one JSON line {"partition": P, "offset": O} saying where it was appended.
//
// Plain mode: each line is a record value (UTF-8), with the key given by
// --key (no --key: a null key).  --json mode: each line is an object
//   {"key": "k" | null, "value": "v" | null, "headers": {...} | [[name, value], ...]}
// where an absent key or value means null, and headers are an object or, to
// repeat a name or fix the order, a list of [name, value] pairs.  Blank lines
// are skipped in --json mode; in plain mode an empty line is an empty value.
//
// The topic is created first if it does not exist (Admin.CreateTopic, with
// --partitions partitions; default 1, or N+1 with --partition N).  Lines are
// sent in order, in Produce requests of up to 1000 records, one request at a
// time, so records sent to one partition get increasing offsets in input order.
//
// Exit status: 0 if every record was appended, 1 if the broker refused a
// request or a partition (the record's line then has "offset": null and an
// "error"), 2 for a usage error or a bad --json line.

const readline = require('node:readline');
const { parseArgs } = require('node:util');
const { brokerAddress, connect, unary, int64, parseCount, UsageError, InputError, run, grpc } =
  require('./logstore');

const USAGE =
  'usage: node produce.js TOPIC [--partition N] [--key K | --json] [--partitions COUNT] [--broker HOST:PORT]';
const MAX_RECORDS_PER_REQUEST = 1000;
const MAX_BYTES_PER_REQUEST = 1 << 20; // well under the default max_batch_bytes (16 MiB)
const MAX_REQUESTS_QUEUED = 4;

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        partition: { type: 'string' },
        key: { type: 'string' },
        json: { type: 'boolean', default: false },
        partitions: { type: 'string' },
        broker: { type: 'string' },
      },
    });
  } catch (err) {
    throw new UsageError(err.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError('give exactly one TOPIC');
  if (values.json && values.key !== undefined) {
    throw new UsageError('--key is for plain lines; with --json put "key" in each line');
  }
  const partition = values.partition === undefined ? undefined : parseCount('--partition', values.partition);
  const partitions =
    values.partitions === undefined ? (partition ?? 0) + 1 : parseCount('--partitions', values.partitions);
  return {
    topic: positionals[0],
    partition,
    key: values.key === undefined ? undefined : Buffer.from(values.key, 'utf8'),
    json: values.json,
    partitions,
    broker: brokerAddress(values.broker),
  };
}

// null/undefined -> absent (null on the wire), a string -> its UTF-8 bytes.
function optionalBytes(field, value, lineNumber) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new InputError(`line ${lineNumber}: "${field}" must be a string or null`);
  return Buffer.from(value, 'utf8');
}

function parseHeaders(headers, lineNumber) {
  if (headers === undefined || headers === null) return [];
  const pairs = Array.isArray(headers) ? headers : typeof headers === 'object' ? Object.entries(headers) : null;
  if (pairs === null) throw new InputError(`line ${lineNumber}: "headers" must be an object or a list of pairs`);
  return pairs.map((pair) => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw new InputError(`line ${lineNumber}: each header must be a string name with a string value`);
    }
    return { name: pair[0], value: Buffer.from(pair[1], 'utf8') };
  });
}

function parseJsonLine(line, lineNumber) {
  let object;
  try {
    object = JSON.parse(line);
  } catch (err) {
    throw new InputError(`line ${lineNumber}: not JSON (${err.message})`);
  }
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw new InputError(`line ${lineNumber}: expected an object with "key", "value" and "headers"`);
  }
  const unknown = Object.keys(object).filter((name) => !['key', 'value', 'headers'].includes(name));
  if (unknown.length) throw new InputError(`line ${lineNumber}: unknown field(s) ${unknown.join(', ')}`);
  return {
    key: optionalBytes('key', object.key, lineNumber),
    value: optionalBytes('value', object.value, lineNumber),
    headers: parseHeaders(object.headers, lineNumber),
  };
}

function recordSize(record) {
  let size = (record.key ? record.key.length : 0) + (record.value ? record.value.length : 0) + 16;
  for (const header of record.headers) size += Buffer.byteLength(header.name) + header.value.length + 8;
  return size;
}

// Where each record of a request went, by the rule documented on
// ProduceResponse: record i went to p = record_partitions[i] (or the single
// partition in `partitions` when record_partitions is empty) at offset
// base_offset(p) + (number of records before i that went to p).
function placeRecords(response, recordCount) {
  const results = new Map(response.partitions.map((result) => [result.partition, result]));
  const routed = response.record_partitions;
  if (routed.length === 0 && response.partitions.length !== 1) {
    throw new Error(`ProduceResponse has no record_partitions but ${response.partitions.length} partition results`);
  }
  if (routed.length !== 0 && routed.length !== recordCount) {
    throw new Error(`ProduceResponse has ${routed.length} record_partitions for ${recordCount} records`);
  }
  const seen = new Map();
  const placed = [];
  for (let i = 0; i < recordCount; i++) {
    const partition = routed.length === 0 ? response.partitions[0].partition : routed[i];
    const result = results.get(partition);
    if (result === undefined) throw new Error(`ProduceResponse has no result for partition ${partition}`);
    const before = seen.get(partition) || 0;
    seen.set(partition, before + 1);
    if (result.error) {
      placed.push({ partition, offset: null, error: `${grpc.status[result.error.code]}: ${result.error.message}` });
    } else {
      placed.push({ partition, offset: int64(BigInt(result.base_offset) + BigInt(before)) });
    }
  }
  for (const [partition, count] of seen) {
    if (results.get(partition).record_count !== count) {
      throw new Error(`partition ${partition} reports ${results.get(partition).record_count} records, expected ${count}`);
    }
  }
  return placed;
}

async function ensureTopic(admin, topic, partitionCount) {
  try {
    await unary(admin, 'CreateTopic', { topic, partition_count: partitionCount });
  } catch (err) {
    if (err.code !== grpc.status.ALREADY_EXISTS) throw err;
  }
}

async function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const { log, admin, close } = connect(options.broker);
  try {
    await ensureTopic(admin, options.topic, options.partitions);
    await produceLines(log, options);
  } finally {
    close();
  }
}

function produceLines(log, options) {
  return new Promise((resolve, reject) => {
    const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    let pending = [];
    let pendingBytes = 0;
    let queued = 0; // requests handed to `chain` and not answered yet
    let chain = Promise.resolve(); // the requests, one after the other
    let stopped = false; // no more lines are taken
    let settled = false;
    let flushScheduled = false;
    let lineNumber = 0;

    const finish = (err) => {
      if (settled) return;
      settled = true;
      stopped = true;
      input.close();
      if (err) reject(err);
      else resolve();
    };

    const send = async (records) => {
      const request = { topic: options.topic, records };
      if (options.partition !== undefined) request.partition = options.partition;
      const response = await unary(log, 'Produce', request);
      for (const placed of placeRecords(response, records.length)) {
        if (placed.offset === null) process.exitCode = 1;
        process.stdout.write(`${JSON.stringify(placed)}\n`);
      }
    };

    const flush = () => {
      flushScheduled = false;
      if (pending.length === 0 || settled) return;
      const records = pending;
      pending = [];
      pendingBytes = 0;
      queued += 1;
      if (queued >= MAX_REQUESTS_QUEUED) input.pause();
      // A failed request rejects `chain`, so the requests after it are not sent.
      chain = chain.then(() => send(records)).then(() => {
        queued -= 1;
        if (queued < MAX_REQUESTS_QUEUED && !stopped) input.resume();
      });
      chain.catch(finish);
    };

    input.on('line', (line) => {
      if (stopped) return;
      lineNumber += 1;
      let record;
      try {
        if (options.json) {
          if (line.trim() === '') return;
          record = parseJsonLine(line, lineNumber);
        } else {
          record = { key: options.key, value: Buffer.from(line, 'utf8'), headers: [] };
        }
      } catch (err) {
        // Produce what came before the bad line, then report it.
        stopped = true;
        input.close();
        flush();
        chain.then(() => finish(err), finish);
        return;
      }
      const size = recordSize(record);
      if (pending.length && pendingBytes + size > MAX_BYTES_PER_REQUEST) flush();
      pending.push(record);
      pendingBytes += size;
      if (pending.length >= MAX_RECORDS_PER_REQUEST) {
        flush();
      } else if (!flushScheduled) {
        // Send what one chunk of input held without waiting for more, so
        // `tail -f file | node produce.js t` produces as lines arrive.
        flushScheduled = true;
        setImmediate(flush);
      }
    });

    input.on('close', () => {
      if (stopped) return; // closed by us, after a failure
      stopped = true;
      flush();
      chain.then(() => finish(), finish);
    });
  });
}

run(USAGE, main);
