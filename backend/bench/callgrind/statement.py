"""HTTP side of statement.sh: `statement.py PORT setup` or `statement.py PORT N SQL|health`.

setup: namespace `bench`, SHARED table `bench.t` with rows 0..9999.
N SQL: N requests of SQL as root on one keep-alive connection ($i = request number
mod 10,000); N health: N GET /health.
"""
import base64
import http.client
import json
import sys

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
    sql("CREATE SHARED TABLE bench.t (id BIGINT PRIMARY KEY, kind INT, payload TEXT)")
    for start in range(0, 10_000, 1000):
        values = ",".join(f"({i}, {i % 10}, 'payload {i}')" for i in range(start, start + 1000))
        sql("INSERT INTO bench.t VALUES " + values)
else:
    n, query = int(sys.argv[2]), sys.argv[3]
    for i in range(n):
        if query == "health":
            conn.request("GET", "/health")
            conn.getresponse().read()
        else:
            sql(query.replace("$i", str(i % 10_000)))
