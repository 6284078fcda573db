// Package dns owns the cluster DNS that each agent serves to its pods: the
// records of the Kubernetes DNS-Based Service Discovery specification
// (github.com/kubernetes/dns docs/specification.md) for the cluster domain,
// answered from an immutable View of the node's desired state, and
// forwarding of every other name to the machine's own resolvers.
//
// It also builds each pod's /etc/resolv.conf as the kubelet does from the
// pod's dnsPolicy and dnsConfig.
//
// The package decides nothing about what runs where: the agent builds a
// View from the Services, ready endpoints and pods it was given and swaps
// it in with Server.Update; queries never wait for an update.
package dns
