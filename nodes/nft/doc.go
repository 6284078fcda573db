// Package nft owns the machine's Service routing and NetworkPolicy in
// nftables: one table (named by the caller, "berth" by default) holding
// kube-proxy-style maps, chains and sets that send ClusterIP, NodePort and
// LoadBalancer traffic to ready endpoints, masquerade what must be
// masqueraded, reject traffic to Services without endpoints, and isolate
// the pods NetworkPolicies select. Nothing outside that table is touched.
//
// The work is split as STYLE.md item 5 asks: Compile turns a Desired state
// into a Ruleset (a pure function, golden-tested, printed in the syntax
// Debian's nft reads), and a Syncer writes rule sets into the kernel
// through github.com/google/nftables, keeping a mirror of what it last
// wrote so that each Sync compiles only the Services that changed and sends
// the difference as one atomic batch. A full rebuild (delete the table and
// recreate it, in one batch) happens at the first Sync and after a failed
// batch.
//
// The layout is kube-proxy's nftables mode (a "service-ips" verdict map
// keyed by address, protocol and port, a "service-nodeports" map, a chain
// per service port and per endpoint, a masquerade mark), with one
// difference: a service chooses its endpoint with a short run of
// "numgen random mod N 0 goto" rules rather than an anonymous numgen
// verdict map, because the kernel keeps a table's sets in a list it
// searches on every insertion, which made rebuilds quadratic in the number
// of services. Only IPv4 is programmed.
package nft
