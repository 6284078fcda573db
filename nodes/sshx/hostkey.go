package sshx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Host key errors. A HostKeyError carries the details and unwraps to one
// of these.
var (
	// ErrHostKeyMismatch: the machine offered a host key other than the
	// one pinned for it. Nothing was sent to it.
	ErrHostKeyMismatch = errors.New("host key mismatch")
	// ErrUnknownHost: no pin and no known_hosts entry vouches for the
	// machine's host key, and accepting unknown keys was not asked for.
	ErrUnknownHost = errors.New("unknown host key")
	// ErrHostKeyRevoked: the machine offered a key that the known_hosts
	// file marks @revoked.
	ErrHostKeyRevoked = errors.New("revoked host key")
)

// HostKeyError is a refused host key: which machine, what it offered,
// what was expected and from where.
type HostKeyError struct {
	Kind    error         // ErrHostKeyMismatch, ErrUnknownHost or ErrHostKeyRevoked
	Machine string        // the Machine's name
	Address string        // host:port dialled
	Offered ssh.PublicKey // the key the machine presented
	// Want are the keys that were expected, as "TYPE SHA256:..."; empty
	// for an unknown host.
	Want []string
	// Source is where the expected keys come from: "spec.ssh.hostKey" or
	// "known_hosts FILE".
	Source string
}

func (e *HostKeyError) Error() string {
	offered := keyString(e.Offered)
	if e.Offered == nil {
		offered = "no host key of the expected type"
	}
	switch e.Kind {
	case ErrHostKeyMismatch:
		return fmt.Sprintf("host key mismatch: machine %s (%s) offered %s, but %s pins %s; refusing to connect (if the machine was reinstalled, check its new key out of band and update the pin)",
			e.Machine, e.Address, offered, e.Source, strings.Join(e.Want, ", "))
	case ErrHostKeyRevoked:
		return fmt.Sprintf("revoked host key: machine %s (%s) offered %s, which %s marks @revoked; refusing to connect",
			e.Machine, e.Address, offered, e.Source)
	default:
		where := "pin it in the Machine's spec.ssh.hostKey or add it to a known_hosts file (--known-hosts)"
		if e.Source != "" {
			where = "pin it in the Machine's spec.ssh.hostKey, add it to " + strings.TrimPrefix(e.Source, "known_hosts ") + ", or let berth record it there by accepting unknown host keys"
		}
		return fmt.Sprintf("unknown host key: machine %s (%s) offered %s, which no pin or known host vouches for; check it out of band, then %s",
			e.Machine, e.Address, offered, where)
	}
}

func (e *HostKeyError) Unwrap() error { return e.Kind }

// keyString is "TYPE SHA256:..." for messages and logs.
func keyString(k ssh.PublicKey) string {
	if k == nil {
		return "no key"
	}
	return k.Type() + " " + ssh.FingerprintSHA256(k)
}

// ParseHostKey parses a pinned host key in authorized_keys format
// ("ssh-ed25519 AAAA... comment"), as a Machine's spec.ssh.hostKey holds it.
func ParseHostKey(s string) (ssh.PublicKey, error) {
	k, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("host key %q: %w", truncate(s, 40), err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("host key %q: more than one key", truncate(s, 40))
	}
	return k, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// hostKeyAlgorithms are the algorithms that make a server present a key
// of these types, so that a machine with several host keys shows the one
// pinned rather than whichever it prefers.
func hostKeyAlgorithms(types []string) []string {
	var algs []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			algs = append(algs, a)
		}
	}
	for _, t := range types {
		if t == ssh.KeyAlgoRSA {
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
		}
		add(t)
	}
	return algs
}

// hostKeyCheck verifies one machine's host key during a handshake. It is
// made for each dial, so that it sees the known_hosts file as it is then.
type hostKeyCheck struct {
	machine, addr  string
	pinned         ssh.PublicKey // spec.ssh.hostKey; wins over known_hosts
	knownHosts     string        // file, or ""
	acceptUnknown  bool
	log            *slog.Logger
	db             ssh.HostKeyCallback // from knownHosts, nil when absent
	refused        *HostKeyError       // set when the callback refused
	acceptedRecord bool
}

func newHostKeyCheck(machine, addr string, pinned ssh.PublicKey, knownHosts string, acceptUnknown bool, log *slog.Logger) (*hostKeyCheck, error) {
	h := &hostKeyCheck{machine: machine, addr: addr, pinned: pinned, knownHosts: knownHosts, acceptUnknown: acceptUnknown, log: log}
	if pinned == nil && knownHosts != "" {
		db, err := knownhosts.New(knownHosts)
		switch {
		case err == nil:
			h.db = db
		case errors.Is(err, fs.ErrNotExist):
			// Nothing known yet; an accepted key creates the file.
		default:
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
	}
	return h, nil
}

// algorithms are the host key algorithms to offer: those of the pinned or
// known keys, or nil (any) for an unknown host.
func (h *hostKeyCheck) algorithms() []string {
	if h.pinned != nil {
		return hostKeyAlgorithms([]string{h.pinned.Type()})
	}
	var types []string
	for _, k := range h.knownKeys() {
		types = append(types, k.Key.Type())
	}
	return hostKeyAlgorithms(types)
}

// knownKeys lists the known_hosts entries for this machine's address: the
// database is asked about a key it cannot know, and its KeyError lists
// what it would have accepted.
func (h *hostKeyCheck) knownKeys() []knownhosts.KnownKey {
	if h.db == nil {
		return nil
	}
	err := h.db(h.addr, probeRemote, probeKey{})
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return ke.Want
	}
	return nil
}

// noKeyOfType is the refusal of a machine that offered no key of the
// types pinned or known for it.
func (h *hostKeyCheck) noKeyOfType() *HostKeyError {
	e := &HostKeyError{Kind: ErrHostKeyMismatch, Machine: h.machine, Address: h.addr, Source: "spec.ssh.hostKey"}
	if h.pinned != nil {
		e.Want = []string{keyString(h.pinned)}
		return e
	}
	e.Source = "known_hosts " + h.knownHosts
	for _, k := range h.knownKeys() {
		e.Want = append(e.Want, fmt.Sprintf("%s (line %d)", keyString(k.Key), k.Line))
	}
	return e
}

// callback is the ssh.HostKeyCallback.
func (h *hostKeyCheck) callback(_ string, remote net.Addr, key ssh.PublicKey) error {
	refuse := func(kind error, source string, want []string) error {
		h.refused = &HostKeyError{Kind: kind, Machine: h.machine, Address: h.addr, Offered: key, Want: want, Source: source}
		return h.refused
	}
	if h.pinned != nil {
		if bytes.Equal(h.pinned.Marshal(), key.Marshal()) {
			return nil
		}
		return refuse(ErrHostKeyMismatch, "spec.ssh.hostKey", []string{keyString(h.pinned)})
	}
	source := ""
	if h.knownHosts != "" {
		source = "known_hosts " + h.knownHosts
	}
	if h.db != nil {
		err := h.db(h.addr, remote, key)
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &re):
			return refuse(ErrHostKeyRevoked, fmt.Sprintf("known_hosts %s:%d", re.Revoked.Filename, re.Revoked.Line), nil)
		case errors.As(err, &ke) && len(ke.Want) > 0:
			want := make([]string, len(ke.Want))
			for i, w := range ke.Want {
				want[i] = fmt.Sprintf("%s (line %d)", keyString(w.Key), w.Line)
			}
			return refuse(ErrHostKeyMismatch, source, want)
		case errors.As(err, &ke):
			// Unknown: below.
		default:
			return err
		}
	}
	if !h.acceptUnknown || h.knownHosts == "" {
		return refuse(ErrUnknownHost, source, nil)
	}
	if err := appendKnownHost(h.knownHosts, h.addr, key); err != nil {
		return fmt.Errorf("record host key of %s in %s: %w", h.addr, h.knownHosts, err)
	}
	h.acceptedRecord = true
	h.log.Warn("accepted unknown host key", "address", h.addr, "key", keyString(key), "known_hosts", h.knownHosts)
	return nil
}

// appendKnownHost records key for addr ([host]:port unless the port is
// 22) at the end of file, which is created 0600 if missing. The file is
// locked while it is written, so that bootstraps running in parallel do
// not interleave their lines.
func appendKnownHost(file, addr string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	// Start on a line of its own if the file does not end with one.
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err != nil && err != io.EOF {
			return err
		}
		if last[0] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := f.WriteString(line); err != nil {
		return err
	}
	return f.Sync()
}

// probeKey is a key no known_hosts file holds, to list the keys it holds
// for an address.
type probeKey struct{}

func (probeKey) Type() string                        { return "berth-probe" }
func (probeKey) Marshal() []byte                     { return []byte("berth-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// probeRemote stands for the remote address when probing; knownhosts looks
// the dialled address up, not this one.
var probeRemote net.Addr = &net.TCPAddr{IP: net.IPv4zero}
