// Package network owns the controller's side of networking: a pure
// function from the rendered repository, the pods every machine reports
// and what the previous pass allocated, to the api.Network each machine's
// agent is given (PUT /v1/network).
//
// One Compute call decides, for the whole fleet at once:
//
//   - each machine's pod CIDR (its spec.podCIDR, or a share of the
//     Cluster's pod CIDR of spec.podCIDRMaskSize bits) and the routes to
//     every other machine's pods through that machine's address;
//   - each Service's ClusterIP (spec.clusterIP, or one from the service
//     CIDR, never its network address, its first address, which is kept
//     as kube-apiserver keeps it for the kubernetes Service, or an IPv4
//     broadcast address), NodePorts (30000-32767) and LoadBalancer address
//     (from the Cluster's spec.loadBalancer.pools), and the healthy machine
//     that holds that address;
//   - each Service's endpoints: the pods its selector matches, on every
//     machine, ready or not, those being stopped marked Terminating and
//     never Ready, with named target ports resolved against the pod's own
//     containers (a pod without the port is left out of that port);
//   - the NetworkPolicies selecting pods on each machine, their peers
//     resolved to pod addresses and named ports to numbers;
//   - the Ingress the ingress machines serve: every Ingress of the berth
//     class merged, backends resolved to ready endpoints, certificates
//     from kubernetes.io/tls Secrets.
//
// Allocations are stable: what Memory says a Service or machine had is
// kept while it stays valid, and new ones are placed by a hash of their
// name, so the same repository gives the same addresses whatever order
// objects and pods come in, and mostly even when Memory is lost.
//
// # Calling it from the controller loop
//
// After live.Plan, and before sending any pod set:
//
//	in := network.Input{
//		Desired:   desired,
//		Machines:  network.FromLive(observed, pass, last),
//		Addresses: resolved, // machines whose spec.address is a DNS name
//		Memory:    mem.Network, // what the previous Compute returned
//	}
//	res, err := network.Compute(in)
//	digests := res.Digests() // = Network.Digest, one encoding for all
//	// 1. For each machine, res.Networks[name]: when digests[name] differs
//	//    from the NodeInfo.Network.Digest the agent reported, set the
//	//    next Generation on a copy and PUT it. Pods the pass stops are marked
//	//    Stopping by FromLive: every machine then has them as
//	//    Terminating endpoints that get no new connection before step 2
//	//    tells their machine to stop them.
//	// 2. Send the pass's pod sets (live.MachinePlan.Send).
//	// 3. Keep res.Memory with the live pass's memory (plain JSON, no
//	//    Secret data) and report res.Diagnostics.
//
// A new pod gets its address only once its machine runs it, so it joins
// endpoints on the pass after it is observed: the loop already runs a pass
// whenever an agent reports a change.
//
// Only reported pods count: an unreachable machine reports none, so its
// pods leave every endpoint set and policy peer list, much as Kubernetes
// marks the pods of an unreachable node not ready. A caller that would
// rather keep them for a grace period passes their last reports with
// Ready false.
//
// Networks share their Services, Pods and Ingress: treat them as
// read-only. Generation is left zero for the caller. Compute does no I/O
// and reads no clock.
package network
