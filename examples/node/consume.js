#!/usr/bin/env node
'use strict';
// Reads one partition of TOPIC with Log.Subscribe and prints one JSON line per
// record:
//   {"topic", "partition", "offset", "timestamp", "key", "value", "headers"}
// `timestamp` is the record's timestamp_ms; `key` and `value` are UTF-8
// strings, or null when the record has none (an empty key is ""); `headers`
// is a list of [name, value] pairs in the record's order (names may repeat).
//
// Starts at the log start (--from-beginning) or at an offset (--offset N),
// follows the log as records are appended, and exits after --max records
// (without --max it runs until interrupted or the topic is deleted).
//
// Subscribe returns whole batches, so the first one may begin before the
// start: records below the start offset the broker resolved are dropped.
// Record i of a batch has offset base_offset + i.
//
// Exit status: 0 after --max records, 1 on a broker error (NOT_FOUND,
// OUT_OF_RANGE, ...) or a key, value or header that is not UTF-8 (this
// example prints text only), 2 for a usage error.

const { parseArgs } = require('node:util');
const { brokerAddress, connect, recordFields, parseCount, UsageError, run } = require('./logstore');

const USAGE =
  'usage: node consume.js TOPIC --partition N (--from-beginning | --offset N) [--max N] [--broker HOST:PORT]';

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        partition: { type: 'string' },
        'from-beginning': { type: 'boolean', default: false },
        offset: { type: 'string' },
        max: { type: 'string' },
        broker: { type: 'string' },
      },
    });
  } catch (err) {
    throw new UsageError(err.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError('give exactly one TOPIC');
  if (values.partition === undefined) throw new UsageError('--partition N is required');
  if (values['from-beginning'] === (values.offset !== undefined)) {
    throw new UsageError('give exactly one of --from-beginning and --offset N');
  }
  const max = values.max === undefined ? undefined : parseCount('--max', values.max);
  if (max === 0) throw new UsageError('--max needs at least 1');
  return {
    topic: positionals[0],
    partition: parseCount('--partition', values.partition),
    offset: values.offset === undefined ? undefined : parseCount('--offset', values.offset),
    max,
    broker: brokerAddress(values.broker),
  };
}

function toJsonLine(topic, partition, offset, record) {
  return JSON.stringify(recordFields(topic, partition, offset, record));
}

function consume(log, options) {
  return new Promise((resolve, reject) => {
    const request = { topic: options.topic, partition: options.partition };
    if (options.offset === undefined) request.start_position = 'LOG_POSITION_EARLIEST';
    else request.start_offset = String(options.offset);
    const call = log.Subscribe(request);

    let start = null; // resolved by the broker in the first response
    let printed = 0;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      call.cancel(); // a no-op once the stream has ended
      if (err) reject(err);
      else resolve();
    };

    call.on('data', (response) => {
      if (done) return;
      try {
        if (response.start_offset != null) start = BigInt(response.start_offset);
        if (start === null) throw new Error('the first SubscribeResponse did not carry start_offset');
        const stop = response.stop_offset != null ? BigInt(response.stop_offset) : null;
        for (const batch of response.batches) {
          const base = BigInt(batch.base_offset);
          for (let i = 0; i < batch.records.length; i++) {
            const offset = base + BigInt(i);
            if (offset < start) continue; // before the start: the batch began earlier
            if (stop !== null && offset >= stop) continue; // after the stop
            const line = toJsonLine(options.topic, options.partition, offset, batch.records[i]);
            if (!process.stdout.write(`${line}\n`)) {
              // Let gRPC flow control hold the broker back while stdout drains.
              call.pause();
              process.stdout.once('drain', () => call.resume());
            }
            printed += 1;
            if (options.max !== undefined && printed >= options.max) {
              finish();
              return;
            }
          }
        }
      } catch (err) {
        finish(err);
      }
    });
    call.on('error', (err) => {
      if (!done) finish(err); // CANCELLED after finish() is our own doing
    });
    call.on('end', () => finish()); // OK: the stop position was reached
  });
}

async function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const { log, close } = connect(options.broker);
  try {
    await consume(log, options);
  } finally {
    close();
  }
}

run(USAGE, main);
