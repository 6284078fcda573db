package ingress

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"berth.dev/berth/nodes/api"
)

// certs are the certificates of one table, by the host names they serve.
type certs struct {
	exact    map[string]*tls.Certificate // by lowercase host
	wildcard map[string]*tls.Certificate // "*.example.com" by "example.com"
	// def serves names no TLS entry lists: the first certificate by
	// Source, else the self-signed fallback.
	def *tls.Certificate
}

// compileCerts parses the TLS entries in order of Source. An entry that
// does not parse is reported and left out; the others are kept. Errors
// name the entry, never its data.
func compileCerts(entries []api.IngressTLS, fallback *tls.Certificate, now time.Time) (*certs, []Warning) {
	c := &certs{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	var warns []Warning
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b api.IngressTLS) int { return cmp.Compare(a.Source, b.Source) })
	owner := map[string]string{} // host → Source of its certificate
	for _, e := range sorted {
		cert, err := tls.X509KeyPair(e.Cert, e.Key)
		if err != nil {
			warns = append(warns, Warning{e.Source, "tls certificate and key: " + keyPairProblem(err)})
			continue
		}
		leaf := cert.Leaf
		if now.After(leaf.NotAfter) {
			warns = append(warns, Warning{e.Source, fmt.Sprintf("tls certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))})
		}
		if c.def == nil {
			c.def = &cert
		}
		hosts := e.Hosts
		if len(hosts) == 0 {
			hosts = leaf.DNSNames
		}
		for _, h := range hosts {
			h, err := normalizeRuleHost(h)
			if err != nil || h == "" {
				warns = append(warns, Warning{e.Source, fmt.Sprintf("tls host %q: not a DNS name or a wildcard of one label", h)})
				continue
			}
			if prev, ok := owner[h]; ok {
				warns = append(warns, Warning{e.Source, fmt.Sprintf("tls host %q also has a certificate from %s, which wins", h, prev)})
				continue
			}
			if !certCovers(leaf, h) {
				warns = append(warns, Warning{e.Source, fmt.Sprintf("tls certificate does not name host %q", h)})
			}
			owner[h] = e.Source
			if name, ok := strings.CutPrefix(h, "*."); ok {
				c.wildcard[name] = &cert
			} else {
				c.exact[h] = &cert
			}
		}
	}
	if c.def == nil {
		c.def = fallback
	}
	return c, warns
}

// keyPairProblem says what is wrong with a certificate and key pair in
// words that cannot hold the key: crypto/tls's own messages are fixed
// strings, but parse errors of wrapped packages may quote their input, so
// only known shapes are passed through.
func keyPairProblem(err error) string {
	msg := err.Error()
	for _, safe := range []string{
		"tls: failed to find any PEM data in certificate input",
		"tls: failed to find certificate PEM data in certificate input",
		"tls: failed to find \"CERTIFICATE\" PEM block in certificate input",
		"tls: found unknown private key type",
		"tls: failed to find any PEM data in key input",
		"tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input",
		"tls: private key does not match public key",
		"tls: failed to parse private key",
		"tls: found a certificate rather than a key in the PEM for the private key",
		"tls: unknown public key algorithm",
		"tls: private key type does not match public key type",
	} {
		if strings.HasPrefix(msg, safe) {
			return msg
		}
	}
	if strings.HasPrefix(msg, "x509: ") {
		return "certificate does not parse"
	}
	return "certificate or key does not parse"
}

// certCovers says whether the certificate names a rule host (a wildcard
// host is covered by the same wildcard in the certificate).
func certCovers(leaf *x509.Certificate, host string) bool {
	if strings.HasPrefix(host, "*.") {
		return slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return strings.EqualFold(n, host) })
	}
	return leaf.VerifyHostname(host) == nil
}

// get is the certificate for a TLS ServerName: its host's, else the
// wildcard's covering it, else the default.
func (c *certs) get(serverName string) *tls.Certificate {
	h := requestHost(serverName)
	if cert, ok := c.covering(h); ok {
		return cert
	}
	return c.def
}

// covering is the certificate a TLS entry lists for host, exactly or by
// a wildcard.
func (c *certs) covering(host string) (*tls.Certificate, bool) {
	if cert, ok := c.exact[host]; ok {
		return cert, true
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if cert, ok := c.wildcard[host[i+1:]]; ok {
			return cert, true
		}
	}
	return nil, false
}

// selfSigned makes the certificate served to names no TLS entry covers
// while there is no certificate at all, as ingress-nginx's "fake
// certificate".
func selfSigned(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "berth ingress default certificate", Organization: []string{"berth"}},
		DNSNames:              []string{"ingress.local"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
