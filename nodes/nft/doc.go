// Package nft owns the machine's Service routing in nftables: one table
// (named by the caller, "berth" by default) holding kube-proxy-style maps,
// chains and sets that send ClusterIP, NodePort and LoadBalancer traffic to
// ready endpoints, masquerade what must be masqueraded, and reject traffic
// to Services without endpoints. Nothing outside that table is touched.
//
// The work is split as STYLE.md item 5 asks: Compile turns a Desired state
// into a Ruleset (a pure function, golden-tested, printed in nft syntax),
// and a Syncer writes rule sets into the kernel through
// github.com/google/nftables, keeping a mirror of what it last wrote so
// that each Sync sends only the difference, as one atomic batch. A full
// rebuild (delete the table and recreate it, in one batch) happens at the
// first Sync and after a failed batch.
package nft
