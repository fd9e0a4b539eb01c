"""A load-and-query round trip with the Python `salesforce-bulk` client, unchanged, against the
emulator. Prints one line per step; exits non-zero on any failure."""

import os
import sys

from salesforce_bulk import SalesforceBulk
from salesforce_bulk.util import IteratorBytesIO  # noqa: F401 (the client's own result reader)
import unicodecsv

bulk = SalesforceBulk(
    sessionId=os.environ["SFBULK_SESSION"],
    host=os.environ["SFBULK_INSTANCE"],
    API_version="34.0",
)

job = bulk.create_insert_job("Contact", contentType="CSV")
csv = b'FirstName,LastName,Description\nAda,Lovelace,"first, ""programmer"""\nNo,,missing last name\n'
batch = bulk.post_batch(job, csv)
bulk.wait_for_batch(job, batch, sleep_interval=0.2)
bulk.close_job(job)
results = bulk.get_batch_results(batch, job)
assert len(results) == 2, results
assert results[0].success == "true" and results[0].created == "true", results[0]
assert results[1].success == "false" and "REQUIRED_FIELD_MISSING" in results[1].error, results[1]
print("load ok", results[0].id)

query_job = bulk.create_query_job("Contact", contentType="CSV")
query_batch = bulk.query(query_job, "SELECT Id, LastName, Description FROM Contact")
bulk.wait_for_batch(query_job, query_batch, sleep_interval=0.2)
bulk.close_job(query_job)
rows = []
for result in bulk.get_all_results_for_query_batch(query_batch, query_job):
    rows.extend(unicodecsv.DictReader(result, encoding="utf-8"))
assert rows == [
    {"Id": results[0].id, "LastName": "Lovelace", "Description": 'first, "programmer"'}
], rows
print("query ok", len(rows))

try:
    bulk.post_batch(job, csv)
except Exception as error:  # the job is closed: Salesforce's own refusal comes back
    assert "Job is not Open" in str(error), error
    print("closed job refused ok")
else:
    sys.exit("a batch was accepted on a closed job")
