// Package ingress owns the HTTP(S) reverse proxy that the node agent runs on
// ingress machines: it serves the merged api.Ingress of the cluster on the
// machine's addresses, routes each request by host and path as the
// Kubernetes Ingress specification says, and forwards it to one of the
// ready endpoints of the chosen backend.
//
// Routing follows ingress-nginx: an exact host beats a wildcard host
// ("*.example.com" covers exactly one label), which beats the hostless
// rules; within the chosen host the longest matching path wins, an Exact
// path beating a Prefix one of the same length, and Prefix matching is by
// path element ("/foo" covers "/foo/bar" but not "/foobar"). Requests no
// rule takes go to the DefaultBackend, else get 404. Rules of several
// Ingresses that claim the same host and path are resolved in favour of
// the first Ingress by name, and the loser is reported as a Warning.
//
// Requests are balanced over a backend's endpoints by the power of two
// choices on requests in flight; a request whose connection attempt fails
// (and an idempotent request without a body whose connection breaks before
// any response) is retried on another endpoint, so a rolling update behind
// an Ingress loses no request. HTTPS picks certificates by SNI from the
// Ingresses' TLS entries, falls back to the first certificate (or a
// self-signed one) for other names, and plain HTTP requests for hosts that
// have a certificate are redirected to HTTPS with 308, as ingress-nginx's
// ssl-redirect does.
//
// The package decides nothing about what is routed where: the agent gives
// it the api.Ingress it was sent, with Proxy.Update, which swaps the
// routing table atomically; requests in flight finish with the table they
// started with.
package ingress
