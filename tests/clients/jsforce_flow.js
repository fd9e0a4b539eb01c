// A load-and-query round trip with jsforce 1.x's Bulk API, unchanged, against the emulator.
// Prints one line per step; exits non-zero on any failure.
const assert = require('assert');
const jsforce = require('jsforce');

const conn = new jsforce.Connection({
  instanceUrl: process.env.SFBULK_INSTANCE,
  accessToken: process.env.SFBULK_SESSION,
  version: '34.0',
});
conn.bulk.pollInterval = 200;

(async () => {
  const results = await conn.bulk.load('Contact', 'insert', [
    { FirstName: 'Grace', LastName: 'Hopper', Description: 'said "hello,\nworld"' },
    { FirstName: 'Nobody' },
  ]);
  assert.strictEqual(results.length, 2);
  assert.ok(results[0].success && results[0].id.startsWith('003'), JSON.stringify(results[0]));
  assert.ok(!results[1].success, JSON.stringify(results[1]));
  assert.ok(results[1].errors.join(' ').includes('REQUIRED_FIELD_MISSING'), JSON.stringify(results[1]));
  console.log('load ok', results[0].id);

  const records = [];
  await new Promise((resolve, reject) => {
    conn.bulk
      .query('SELECT Id, LastName, Description FROM Contact')
      .on('record', (record) => records.push(record))
      .on('error', reject)
      .on('end', resolve);
  });
  assert.deepStrictEqual(records, [
    { Id: results[0].id, LastName: 'Hopper', Description: 'said "hello,\nworld"' },
  ]);
  console.log('query ok', records.length);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
