// A load-and-query round trip with jsforce 3.x's Bulk API 2.0 (`conn.bulk2`), unchanged, against
// the emulator. Prints one line per step; exits non-zero on any failure.
const assert = require('assert');
const jsforce = require('jsforce');

const conn = new jsforce.Connection({
  instanceUrl: process.env.SFBULK_INSTANCE,
  accessToken: process.env.SFBULK_SESSION,
  version: '59.0',
});
conn.bulk2.pollInterval = 200;
const generated = Number(process.env.SFBULK_GENERATED_CONTACTS);

(async () => {
  const results = await conn.bulk2.loadAndWaitForResults({
    object: 'Contact',
    operation: 'insert',
    input: [
      { FirstName: 'Grace', LastName: 'Hopper', Description: 'said "hello,\nworld"' },
      { FirstName: 'Nobody', LastName: '' },
    ],
  });
  assert.strictEqual(results.successfulResults.length, 1, JSON.stringify(results));
  const loaded = results.successfulResults[0];
  assert.ok(loaded.sf__Id.startsWith('003'), JSON.stringify(loaded));
  assert.strictEqual(loaded.Description, 'said "hello,\nworld"');
  assert.strictEqual(results.failedResults.length, 1, JSON.stringify(results));
  assert.ok(results.failedResults[0].sf__Error.includes('REQUIRED_FIELD_MISSING'));
  console.log('load ok', loaded.sf__Id);

  // The stored record first, then the generated ones: more than one page of results.
  const stream = await conn.bulk2.query('SELECT Id, LastName, Description FROM Contact');
  const records = [];
  await new Promise((resolve, reject) => {
    stream.on('record', (record) => records.push(record)).on('error', reject).on('end', resolve);
  });
  // jsforce 3.10 pipes every page into one CSV parser, so the header line each later page
  // starts with (as Salesforce's do) comes out as a record of the column names.
  const headerRows = records.filter((r) => r.Id === 'Id' && r.LastName === 'LastName');
  const rows = records.filter((r) => r.Id !== 'Id');
  assert.strictEqual(rows.length, 1 + generated);
  assert.strictEqual(headerRows.length, Math.ceil((1 + generated) / 10000) - 1);
  assert.deepStrictEqual(rows[0], {
    Id: loaded.sf__Id,
    LastName: 'Hopper',
    Description: 'said "hello,\nworld"',
  });
  assert.ok(rows.slice(1).every((r) => r.Id.startsWith('003') && r.LastName), JSON.stringify(rows[1]));
  console.log('query ok', rows.length, 'rows; pages', headerRows.length + 1);

  const job = conn.bulk2.createJob({ object: 'Contact', operation: 'insert' });
  await job.open();
  await job.abort();
  await assert.rejects(job.uploadData([{ LastName: 'Late' }]), /INVALIDJOBSTATE|state/);
  console.log('aborted job refused ok');
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
