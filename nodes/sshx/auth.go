package sshx

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// maxKeyFile bounds how much of a key file is read; private keys are a few
// kilobytes at most.
const maxKeyFile = 1 << 20

// Auth is how the controller proves who it is to machines: its private
// key, from a file or held by the running ssh-agent. An Auth never prints
// or logs key material; its String and LogValue name the source and the
// public key's fingerprint only.
type Auth struct {
	source string     // for messages: "key file PATH" or "ssh-agent at SOCK"
	signer ssh.Signer // from a key file
	sock   string     // ssh-agent socket
}

// KeyFile reads the controller's private key from path (an unencrypted
// OpenSSH or PEM key). As OpenSSH does, it refuses a file that group or
// others may access, and a key protected by a passphrase (load that one
// into ssh-agent instead).
func KeyFile(path string) (Auth, error) {
	f, err := os.Open(path)
	if err != nil {
		return Auth{}, fmt.Errorf("ssh key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Auth{}, fmt.Errorf("ssh key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Auth{}, fmt.Errorf("ssh key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return Auth{}, fmt.Errorf("ssh key %s is accessible by group or others (mode %04o); a private key must be private: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return Auth{}, fmt.Errorf("ssh key %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return Auth{}, fmt.Errorf("ssh key %s is larger than %d bytes; not a private key", path, maxKeyFile)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return Auth{}, fmt.Errorf("ssh key %s is protected by a passphrase: add it to ssh-agent (ssh-add) and leave --ssh-key unset", path)
		}
		// The parser's errors describe the format, never the content.
		return Auth{}, fmt.Errorf("ssh key %s: %w", path, err)
	}
	return Auth{source: "key file " + path, signer: signer}, nil
}

// SSHAgent uses the keys of the ssh-agent that SSH_AUTH_SOCK points at. The
// agent is asked at every connection, so keys added later are used.
func SSHAgent() (Auth, error) {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return Auth{}, errors.New("no ssh key: give --ssh-key (or BERTH_SSH_KEY), or run an ssh-agent (SSH_AUTH_SOCK is not set)")
	}
	return Auth{source: "ssh-agent at " + sock, sock: sock}, nil
}

// AuthFrom is the controller's usual choice: the key file when one is
// named (--ssh-key, BERTH_SSH_KEY), otherwise the running ssh-agent.
func AuthFrom(keyFile string) (Auth, error) {
	if keyFile != "" {
		return KeyFile(keyFile)
	}
	return SSHAgent()
}

// String names where the key comes from, and its fingerprint when known.
func (a Auth) String() string {
	if a.signer != nil {
		return a.source + " (" + ssh.FingerprintSHA256(a.signer.PublicKey()) + ")"
	}
	if a.source == "" {
		return "no ssh key"
	}
	return a.source
}

// LogValue keeps key material out of logs.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.String()) }

func (a Auth) valid() bool { return a.signer != nil || a.sock != "" }

// methods returns the auth methods for one handshake, and a function that
// releases what they hold (the connection to ssh-agent) once it is over.
func (a Auth) methods() ([]ssh.AuthMethod, func(), error) {
	switch {
	case a.signer != nil:
		return []ssh.AuthMethod{ssh.PublicKeys(a.signer)}, func() {}, nil
	case a.sock != "":
		c, err := net.Dial("unix", a.sock)
		if err != nil {
			return nil, nil, fmt.Errorf("ssh-agent at %s: %w", a.sock, err)
		}
		ag := agent.NewClient(c)
		return []ssh.AuthMethod{ssh.PublicKeysCallback(ag.Signers)}, func() { c.Close() }, nil
	default:
		return nil, nil, errors.New("no ssh key configured")
	}
}
