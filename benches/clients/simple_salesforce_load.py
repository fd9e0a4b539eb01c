"""A whole load by simple-salesforce's Bulk API 2.0 client, as its users write it: `insert` (which
counts the file, splits it under 100 MB and runs a job per piece), then each job's successful,
failed and unprocessed results read to files. Prints one JSON line: jobs and records.

Usage: python simple_salesforce_load.py CSV RESULTS_DIR CONCURRENCY
Environment: SFBULK_INSTANCE (https://host:port), SFBULK_SESSION (an access token); the CA the
emulator's certificate is signed by in REQUESTS_CA_BUNDLE."""

import json
import os
import sys

from simple_salesforce import Salesforce

csv_file, results_dir, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
sf = Salesforce(instance_url=os.environ["SFBULK_INSTANCE"], session_id=os.environ["SFBULK_SESSION"],
                version="59.0")
jobs = sf.bulk2.Contact.insert(csv_file=csv_file, concurrency=concurrency)
for job in jobs:
    job_id = job["job_id"]
    sf.bulk2.Contact.get_successful_records(job_id, file=os.path.join(results_dir, f"{job_id}-successful.csv"))
    sf.bulk2.Contact.get_failed_records(job_id, file=os.path.join(results_dir, f"{job_id}-failed.csv"))

print(json.dumps({
    "jobs": len(jobs),
    "processed": sum(j["numberRecordsProcessed"] for j in jobs),
    "failed": sum(j["numberRecordsFailed"] for j in jobs),
}))
