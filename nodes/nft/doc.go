// Package nft owns the machine's Service routing and NetworkPolicy in
// nftables: one table (named by the caller, "berth" by default) holding
// the maps, sets and chains that send ClusterIP, NodePort and LoadBalancer
// traffic to ready endpoints, masquerade what must be masqueraded, reject
// traffic to Services without endpoints, and isolate the pods
// NetworkPolicies select. Nothing outside that table is touched.
//
// The work is split as STYLE.md item 5 asks: Compile turns a Desired state
// into a Ruleset (a pure function, golden-tested, printed in the syntax
// Debian's nft reads), and a Syncer writes rule sets into the kernel,
// keeping a mirror of what it last wrote so that each Sync compiles only
// the Services that changed and sends the difference as one atomic batch.
// The Syncer encodes its netlink batches itself (batch.go; expressions
// through github.com/google/nftables/expr), straight into one buffer. A full rebuild (delete the table and
// recreate it, in one batch) happens at the first Sync and after a failed
// batch.
//
// Services are data, not chains. kube-proxy's nftables mode (a verdict map
// to a chain per Service port and per endpoint) makes every batch that
// adds a jump or goto revalidate the whole jump graph in the kernel: with
// 10,000 Services of 10 endpoints, changing one endpoint took 0.3 s. Here
// a fixed set of chains reads data maps keyed by Service address (ip .
// protocol . port): service-ips says which addresses have endpoints,
// service-endpoints maps address . slot to the DNAT target, and the
// services chain holds one "numgen random mod N" rule per endpoint count
// in use (see compile.go). An endpoint change is a few element
// additions and deletions; chains and rules change only when a count,
// short-circuit list or affinity timeout comes into use or goes out of
// use. sessionAffinity ClientIP is a dynamic map (client . Service address
// : endpoint, with the Service's timeout) that a filter chain after DNAT
// fills and the services chain reads first; entries naming an endpoint
// that went away are deleted after the batch that removed it. Only IPv4 is
// programmed.
package nft
