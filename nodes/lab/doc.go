// Package lab turns one root Linux host into a small fleet of
// bare-metal-like machines for the quick start, the end-to-end tests and the
// benchmarks (`berth lab up|down|status`).
//
// Up makes machines lab1 ... labN. Each is a network namespace berth-labN
// (bind-mounted under /run/netns, as `ip netns add` does) whose eth0 is one
// end of a veth pair; the other end, berth-labN, is a port of the bridge
// berth-lab0 in the host namespace, which holds 198.18.0.1/24. Machine labN
// has the address 198.18.0.(10+N)/24, a default route through the bridge
// address, and the pod CIDR 198.18.(63+N).0/24 out of 198.18.64.0/18; the
// service CIDR is 198.19.0.0/16. Pod CIDRs are routed host-gw style: the
// host and every other machine reach a machine's pod CIDR through its
// address. Inside its namespace each machine runs Debian's sshd (its own
// host key, the lab's client key authorized for root, HOME set to the
// machine's own DIR/labN/root) and its own containerd (own root, state and
// socket, CRI plugin disabled). A daemon enters its machine's namespace by
// being forked from an OS thread that joined it (setns on a locked thread
// that is thrown away afterwards); it runs detached (own session, output
// to a log under DIR) so that it outlives the process that ran Up. The host
// namespace runs Debian's docker-registry on 198.18.0.1:5000, holding the
// echo test images, and the lab directory holds a bare repository fleet.git
// with examples/quickstart rewritten for the lab's machines (host keys
// pinned), the client key, a known_hosts file and lab.env.
//
// Lab traffic uses only 198.18.0.0/15 addresses inside the namespaces the
// lab made, and loopback.
//
// # What each machine's agent must be told
//
// The machines share one kernel, one filesystem and one cgroup tree, so
// nothing an agent keeps may sit at a fixed path. Machine labN's agent runs
// inside berth-labN (it is started over that machine's SSH) and takes, as
// AgentConfig.Args gives them:
//
//	--state-dir          DIR/labN/agent
//	--socket             RUN/labN/agent.sock
//	--containerd-address RUN/labN/containerd.sock
//	--log-dir            DIR/labN/log/pods
//	--namespace          berth-labN (the containerd namespace)
//
// where RUN is DIR/run, or /run/berth-lab-HASH when DIR is too long for a
// unix socket path. The binary goes to DIR/labN/bin/berth. The containerd
// namespace keeps runc's state (/run/containerd/runc/NAMESPACE) and the
// containers' cgroups (/NAMESPACE/ID) apart between machines. The agent must
// keep its CNI state (host-local IPAM's dataDir, libcni's cache) and its
// pods' bind-mounted network namespaces under its state dir, not in
// /var/lib/cni or /run/netns. Its nftables table, CNI bridge and sysctls are
// per network namespace and need nothing. Each Machine document carries
// the paths in spec.agent, with binaryPath and the containerd namespace.
//
// # Records and cleanup
//
// Up writes DIR/lab.json before it makes each thing (namespace, link,
// route, mount, directory outside DIR) and right after it starts each
// process (with the process's start time, so that a reused pid is never
// signalled). Down removes what the record lists; when lab.json is
// missing or corrupt it goes by the lab's conventions instead (namespaces
// and links named berth-lab*, unless the bridge's alias names another
// directory whose lab is still recorded). Either way it also stops every
// process whose command line names DIR or RUN (the daemons, containerd's
// shims, an agent installed under DIR) or that lives in a lab namespace,
// with all their descendants (containers), then removes containerd's
// leftovers outside DIR (runc state, shim sockets, cgroups) and every mount
// under DIR and RUN, and only then the files. It works after a crash, a
// half-finished Up, or with lab.json gone, and a second Down does nothing.
// Up and Down take a host-wide lock (an abstract unix socket, so nothing is
// left on disk) so that they never interleave.
//
// Outside DIR and RUN, Up may leave /run/sshd, the empty directory
// Debian's sshd needs (its init script normally makes it); /run/netns and
// its shared bind mount are removed by Down when Up made them and they are
// empty again.
//
// Tests bring labs up with package labtest, which takes turns with other
// packages' tests and removes labs that killed test runs left behind.
package lab
