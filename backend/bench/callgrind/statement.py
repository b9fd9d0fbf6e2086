"""HTTP side of statement.sh: `statement.py PORT setup|setup-cold` or `statement.py PORT N SQL|health`.

setup: namespace `bench`, SHARED table `bench.t` with rows 0..9999.
setup-cold: also root's USER table `bench.c` with rows 0..99999, flushed (one segment
of 10,000-row row groups).
N SQL: N requests of SQL as root on one keep-alive connection ($i = request number
times 7,919, mod 10,000 for `bench.t`-sized keys, mod 100,000 with setup-cold; $u = a
key no other request of these scripts uses, for INSERTs: 1,000,000 * N + request number);
N health: N GET /health.
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


def fill(table, rows, payload):
    for start in range(0, rows, 1000):
        values = ",".join(f"({i}, {i % 10}, '{payload} {i}')" for i in range(start, start + 1000))
        sql(f"INSERT INTO {table} VALUES " + values)


if sys.argv[2].startswith("setup"):
    sql("CREATE NAMESPACE bench")
    sql("CREATE SHARED TABLE bench.t (id BIGINT PRIMARY KEY, kind INT, payload TEXT)")
    fill("bench.t", 10_000, "payload")
    if sys.argv[2] == "setup-cold":
        sql("CREATE USER TABLE bench.c (id BIGINT PRIMARY KEY, kind INT, payload TEXT)")
        fill("bench.c", 100_000, "payload of cold row")
        job = sql("STORAGE FLUSH TABLE bench.c")["results"][0]["rows"][0][0]
        while True:
            rows = sql(f"SELECT status FROM system.jobs WHERE job_id = '{job}'")["results"][0]["rows"]
            if rows[0][0] in ("completed", "failed"):
                assert rows[0][0] == "completed", rows
                break
            time.sleep(0.1)
else:
    n, query = int(sys.argv[2]), sys.argv[3]
    keys = 100_000 if "bench.c" in query else 10_000
    for i in range(n):
        if query == "health":
            conn.request("GET", "/health")
            conn.getresponse().read()
        else:
            sql(query.replace("$i", str(i * 7919 % keys)).replace("$u", str(1_000_000 * n + i)))
