// A whole load by jsforce 3.x's Bulk API 2.0 client, as its users write it:
// `bulk2.loadAndWaitForResults` (one job, the file streamed to it, then its three result files
// read and parsed). Prints one JSON line: records that succeeded and failed.
//
// Usage: node jsforce_load.js CSV
// Environment: NODE_PATH (where jsforce is installed), SFBULK_INSTANCE, SFBULK_SESSION; the CA the
// emulator's certificate is signed by in NODE_EXTRA_CA_CERTS.
const fs = require('fs');
const jsforce = require('jsforce');

const conn = new jsforce.Connection({
  instanceUrl: process.env.SFBULK_INSTANCE,
  accessToken: process.env.SFBULK_SESSION,
  version: '59.0',
});

(async () => {
  const results = await conn.bulk2.loadAndWaitForResults({
    object: 'Contact',
    operation: 'insert',
    input: fs.createReadStream(process.argv[2]),
    // jsforce's default poll interval (1 s); its default timeout (30 s) raised so that the
    // measure is the load's, not a timeout's.
    pollInterval: 1000,
    pollTimeout: 3600000,
  });
  console.log(JSON.stringify({
    succeeded: results.successfulResults.length,
    failed: results.failedResults.length,
    unprocessed: results.unprocessedRecords.length,
  }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
