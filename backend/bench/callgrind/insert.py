"""HTTP side of insert.sh: `insert.py PORT setup|count|warm|measure`.

setup: namespace `bench`, USER table `bench.chat`, users u0..u10 (password `pw`).
count: prints the number of rows of system.live.
warm / measure: 200 / 1,000 single-row INSERTs by u0 on one keep-alive connection.
"""
import base64
import http.client
import json
import sys

port, phase = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port)


def sql(query, user="root", password=""):
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": "Basic " + credentials}
    conn.request("POST", "/sql", json.dumps({"sql": query}), headers)
    answer = json.loads(conn.getresponse().read())
    assert answer["status"] == "success", answer
    return answer


if phase == "setup":
    sql("CREATE NAMESPACE bench")
    sql("CREATE USER TABLE bench.chat (id BIGINT PRIMARY KEY, room INT, body TEXT)")
    for u in range(11):
        sql(f"CREATE USER 'u{u}' WITH PASSWORD 'pw' ROLE user")
elif phase == "count":
    rows = sql("SELECT count(*) FROM system.live")["results"][0]["rows"]
    print("system.live rows:", rows[0][0])
else:
    first, count = {"warm": (0, 200), "measure": (100_000, 1000)}[phase]
    for i in range(first, first + count):
        sql(f"INSERT INTO bench.chat VALUES ({i}, 1, 'x')", "u0", "pw")
