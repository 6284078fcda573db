// Package nodes is the machine side of berth: SSH bootstrap and transport,
// the node agent and its API, the containerd runtime, the CNI pod network,
// nftables service routing, probes, logs, metrics and the local lab. It
// runs what it is told to and never decides what should run where; that is
// the reconciler's job.
//
// The pieces arrive with the agent and lab issues; until then the package
// holds nothing but this description of what it owns.
package nodes
