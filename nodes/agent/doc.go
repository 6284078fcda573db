// Package agent is berth's kubelet: the daemon on every machine that runs
// exactly the pods it is told to, keeps them healthy while the controller
// is away (restarts with backoff, startup, liveness and readiness probes,
// graceful termination), persists its desired set, adopts running
// containers after a restart, and reports what it sees. It also keeps the
// machine's Network (PUT /v1/network) and has it applied through a
// NetworkApplier (nodes/agent/network).
package agent
