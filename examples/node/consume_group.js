#!/usr/bin/env node
'use strict';
// Consumes TOPIC... as a member of consumer group GROUP with Groups.Consume
// (one bidirectional stream) and prints one JSON line per record:
//   {"topic", "partition", "offset", "timestamp", "key", "value", "headers", "attempt"}
// The fields are those of consume.js, plus `attempt`: 1 for a first delivery,
// more when the broker delivers a record again (after an ack deadline passed,
// or a rebalance moved its partition before it was acked).
//
// The whole protocol, with nothing but the stubs loaded from proto/:
// 1. The first request is a Join: the group, the topics and the options.  The
//    broker assigns the member some partitions and answers with its member id
//    and that assignment (every later response repeats the current one).
// 2. The broker pushes Deliveries: records of one partition whose delivery
//    ids are consecutive from `first_delivery_id`, never more than
//    --max-in-flight unacked records at a time.
// 3. Once every record of a Delivery is printed, one DeliveryIdRange
//    [first_delivery_id, first_delivery_id + records) acks all of them.  The
//    broker advances the group's committed offsets; a restarted member (or
//    another one) carries on from there.
// 4. An empty request every third of the session timeout is a heartbeat, so a
//    member on a quiet topic keeps its place in the group.
// 5. Leaving sends {leave: true} and half-closes; the broker hands the
//    member's partitions to the others and ends the stream with OK.
//
// Delivery is at-least-once: a record is acked after it is printed, so one
// printed just before a crash may be printed again by the member that takes
// its partition over.  Printing cannot fail, so this example never nacks and
// never extends a deadline; a consumer with slow or fallible work would send
// `nack` or `extend_deadline` with the same DeliveryIds.
//
// Stops after --count records (it acks them, leaves and exits 0), or on SIGINT
// or SIGTERM (it leaves and exits 0; a second signal gives up at once).
//
// Exit status: 0 after a clean leave; 1 if the broker refused the join
// (NOT_FOUND for an unknown topic, INVALID_ARGUMENT for an option out of
// range, FAILED_PRECONDITION when the group's live members use other topics
// or another mode) or ended the stream, or a record is not UTF-8 (this example
// prints text only); 2 for a usage error.  Problems the broker reports without
// ending the stream (stale acks, errors) go to stderr.

const path = require('node:path');
const { parseArgs } = require('node:util');
const { brokerAddress, connect, recordFields, parseCount, UsageError, run, grpc } =
  require('./logstore');

const USAGE =
  'usage: node consume_group.js GROUP TOPIC [TOPIC...] [--count N] [--start earliest|latest|EPOCH_MS]\n' +
  '       [--key-ordered] [--at-most-once] [--max-in-flight N] [--ack-deadline-ms MS]\n' +
  '       [--session-timeout-ms MS] [--client-id ID] [--verbose] [--broker HOST:PORT]';
const DEFAULT_SESSION_TIMEOUT_MS = 30000; // the broker's default, used when --session-timeout-ms is not given
const LEAVE_TIMEOUT_MS = 10000; // how long the broker has to end the stream after our leave
const PROGRAM = path.basename(__filename);

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        count: { type: 'string' },
        start: { type: 'string', default: 'latest' },
        'key-ordered': { type: 'boolean', default: false },
        'at-most-once': { type: 'boolean', default: false },
        'max-in-flight': { type: 'string' },
        'ack-deadline-ms': { type: 'string' },
        'session-timeout-ms': { type: 'string' },
        'client-id': { type: 'string' },
        verbose: { type: 'boolean', default: false },
        broker: { type: 'string' },
      },
    });
  } catch (err) {
    throw new UsageError(err.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length < 2) throw new UsageError('give a GROUP and at least one TOPIC');
  const count = values.count === undefined ? undefined : parseCount('--count', values.count);
  if (count === 0) throw new UsageError('--count needs at least 1');
  // Zero (the proto default) lets the broker choose; out-of-range values are
  // left for the broker to refuse, with a message naming the accepted range.
  const option = (name) => (values[name] === undefined ? 0 : parseCount(`--${name}`, values[name]));
  return {
    group: positionals[0],
    topics: positionals.slice(1),
    count,
    startPosition: parseStart(values.start),
    deliveryMode: values['key-ordered'] ? 'DELIVERY_MODE_KEY_ORDERED' : 'DELIVERY_MODE_PARTITION_ORDERED',
    deliveryGuarantee: values['at-most-once'] ? 'DELIVERY_GUARANTEE_AT_MOST_ONCE' : 'DELIVERY_GUARANTEE_AT_LEAST_ONCE',
    maxInFlight: option('max-in-flight'),
    ackDeadlineMs: option('ack-deadline-ms'),
    sessionTimeoutMs: option('session-timeout-ms'),
    clientId: values['client-id'] ?? `${PROGRAM}/${process.pid}`,
    verbose: values.verbose,
    broker: brokerAddress(values.broker),
  };
}

// Where a group with no committed offsets starts: a StartPosition message.
function parseStart(text) {
  if (text === 'earliest') return { offset_position: 'OFFSET_POSITION_EARLIEST' };
  if (text === 'latest') return { offset_position: 'OFFSET_POSITION_LATEST' };
  if (/^\d+$/.test(text)) return { timestamp_ms: String(parseCount('--start', text)) };
  throw new UsageError(`--start takes earliest, latest or a time in epoch milliseconds, got ${JSON.stringify(text)}`);
}

function joinRequest(options) {
  return {
    join: {
      group: options.group,
      topics: options.topics,
      max_in_flight_records: options.maxInFlight,
      ack_deadline_ms: options.ackDeadlineMs,
      delivery_mode: options.deliveryMode,
      start_position: options.startPosition,
      session_timeout_ms: options.sessionTimeoutMs,
      delivery_guarantee: options.deliveryGuarantee,
      client_id: options.clientId,
    },
  };
}

// A DeliveryIds with one range: the `count` ids from `firstId` (a BigInt).
// uint64 fields are written as decimal strings, exact at any size.
function idRange(firstId, count) {
  return { ranges: [{ first_id: String(firstId), end_id: String(firstId + BigInt(count)) }] };
}

// The number of ids in a DeliveryIds (single ids plus ranges).
function idCount(ids) {
  let total = BigInt(ids.ids.length);
  for (const range of ids.ranges) total += BigInt(range.end_id) - BigInt(range.first_id);
  return total;
}

function describeAssignment(response) {
  const owned = response.assignment.map((tp) => `${tp.topic}/${tp.partition}`).join(', ') || 'nothing';
  return `member ${response.member_id} (generation ${response.generation}) owns ${owned}`;
}

function consumeGroup(groups, options) {
  return new Promise((resolve, reject) => {
    const call = groups.Consume();
    const heartbeatMs = Math.max(1, Math.floor((options.sessionTimeoutMs || DEFAULT_SESSION_TIMEOUT_MS) / 3));
    let printed = 0;
    let leaving = false; // leave sent: deliveries still arriving are left unprinted and unacked
    let failure = null; // why we left, if not by --count or a signal
    let settled = false;
    let lastAssignment = null;
    let leaveTimer = null;

    const heartbeat = setInterval(() => call.write({}), heartbeatMs);

    const settle = (err) => {
      if (settled) return;
      settled = true;
      clearInterval(heartbeat);
      clearTimeout(leaveTimer);
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      if (err) reject(err);
      else resolve();
    };

    // Leave the group: the broker rebalances, redelivers our unacked records
    // to the other members and ends the stream with OK.
    const leave = (err = null) => {
      if (leaving) return;
      leaving = true;
      failure = err;
      clearInterval(heartbeat);
      call.write({ leave: true });
      call.end();
      leaveTimer = setTimeout(() => {
        call.cancel();
        settle(new Error(`the broker did not end the stream within ${LEAVE_TIMEOUT_MS} ms of the leave`));
      }, LEAVE_TIMEOUT_MS);
    };

    function onSignal() {
      if (!leaving) {
        leave();
        return;
      }
      call.cancel(); // a second signal: stop waiting for the broker
      settle(new Error('interrupted again while leaving the group'));
    }
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);

    // Prints the records of one Delivery and acks the printed ones.  Stops
    // early at --count; the records not printed stay unacked and go back to
    // the group when we leave.
    const handleDelivery = (delivery) => {
      const firstId = BigInt(delivery.first_delivery_id);
      const base = BigInt(delivery.base_offset);
      let done = 0;
      try {
        for (let i = 0; i < delivery.records.length; i++) {
          // Offsets are consecutive from base_offset unless `offsets` lists them.
          const offset = delivery.offsets.length ? BigInt(delivery.offsets[i]) : base + BigInt(i);
          const fields = recordFields(delivery.topic, delivery.partition, offset, delivery.records[i]);
          fields.attempt = delivery.attempt;
          if (!process.stdout.write(`${JSON.stringify(fields)}\n`)) {
            // Let gRPC flow control hold the broker back while stdout drains.
            call.pause();
            process.stdout.once('drain', () => call.resume());
          }
          done += 1;
          printed += 1;
          if (options.count !== undefined && printed >= options.count) break;
        }
      } finally {
        if (done > 0) call.write({ ack: idRange(firstId, done) });
      }
    };

    call.on('data', (response) => {
      if (settled) return;
      if (options.verbose && describeAssignment(response) !== lastAssignment) {
        lastAssignment = describeAssignment(response);
        process.stderr.write(`${PROGRAM}: ${lastAssignment}\n`);
      }
      for (const status of response.errors) {
        process.stderr.write(`${PROGRAM}: the broker reports ${grpc.status[status.code] || status.code}: ${status.message}\n`);
      }
      if (response.stale) {
        const stale = idCount(response.stale);
        if (stale > 0n) {
          process.stderr.write(`${PROGRAM}: ${stale} delivery id(s) were stale (redelivered or moved); nothing was applied for them\n`);
        }
      }
      if (leaving) return;
      try {
        for (const delivery of response.deliveries) {
          handleDelivery(delivery);
          if (options.count !== undefined && printed >= options.count) {
            leave();
            return;
          }
        }
      } catch (err) {
        leave(err); // e.g. a value that is not UTF-8: what was printed is acked
      }
    });

    // 'status' comes last, once per call, whatever the outcome; 'error' comes
    // before it for a non-OK status and is handled there.
    call.on('error', () => {});
    call.on('status', (status) => {
      if (status.code !== grpc.status.OK) {
        const err = new Error(status.details);
        err.code = status.code;
        err.details = status.details;
        settle(leaving && status.code === grpc.status.CANCELLED && failure ? failure : err);
      } else if (!leaving) {
        settle(new Error('the broker ended the stream although this member did not leave'));
      } else {
        settle(failure);
      }
    });

    call.write(joinRequest(options));
  });
}

async function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const { groups, close } = connect(options.broker);
  try {
    await consumeGroup(groups, options);
  } finally {
    close();
  }
}

run(USAGE, main);
