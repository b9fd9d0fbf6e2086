"""HTTP side of cold_point.sh: `cold_point.py PORT setup` or `cold_point.py PORT N`.

setup: namespace `bench`, USER table `bench.c` with 100,000 rows of root, flushed.
N: N point reads of flushed rows by primary key on one keep-alive connection.
"""
import base64
import http.client
import json
import sys
import time

port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port)
credentials = "Basic " + base64.b64encode(b"root:").decode()


def sql(query):
    conn.request("POST", "/sql", json.dumps({"sql": query}),
                 {"Content-Type": "application/json", "Authorization": credentials})
    answer = json.loads(conn.getresponse().read())
    assert answer["status"] == "success", answer
    return answer


if sys.argv[2] == "setup":
    sql("CREATE NAMESPACE bench")
    sql("CREATE USER TABLE bench.c (id BIGINT PRIMARY KEY, kind INT, payload TEXT)")
    for start in range(0, 100_000, 1000):
        values = ",".join(f"({i}, {i % 10}, 'payload of cold row {i}')" for i in range(start, start + 1000))
        sql("INSERT INTO bench.c VALUES " + values)
    job = sql("STORAGE FLUSH TABLE bench.c")["results"][0]["rows"][0][0]
    while True:
        status = sql(f"SELECT status FROM system.jobs WHERE job_id = '{job}'")["results"][0]["rows"][0][0]
        if status in ("completed", "failed"):
            assert status == "completed", status
            break
        time.sleep(0.1)
else:
    for i in range(int(sys.argv[2])):
        answer = sql(f"SELECT id, kind, payload FROM bench.c WHERE id = {(i * 7919) % 100_000}")
        assert answer["results"][0]["row_count"] == 1
