package lab

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDBinary is Debian's sshd. It re-executes itself, so it must be an
// absolute path.
var SSHDBinary = "/usr/sbin/sshd"

// privsepDir is the empty directory Debian's sshd chroots its
// pre-authentication children into. The package's init script makes it;
// without systemd or that script, nobody has.
const privsepDir = "/run/sshd"

// writeKey generates an ed25519 key, writes the private key (OpenSSH format,
// mode 0600) to path and the public key to path+".pub", and returns the
// public key in authorized_keys format, without a trailing newline.
func writeKey(path, comment string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", fmt.Errorf("write key: %w", err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub)))
	if err := os.WriteFile(path+".pub", []byte(line+" "+comment+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write key: %w", err)
	}
	return line, nil
}

// sshdConfig is a machine's sshd_config: root logs in with the lab's key
// only, and streamlocal forwarding (how the controller reaches the agent's
// socket) is allowed. Session limits keep sshd's defaults.
func sshdConfig(m Machine) string {
	var b strings.Builder
	p := func(k, v string) { fmt.Fprintf(&b, "%s %s\n", k, v) }
	fmt.Fprintf(&b, "# sshd of lab machine %s, written by berth lab up.\n", m.Name)
	p("ListenAddress", m.SSHAddr())
	p("HostKey", filepath.Join(m.Dir, "ssh_host_ed25519_key"))
	p("PidFile", filepath.Join(m.Dir, "sshd.pid"))
	p("AuthorizedKeysFile", filepath.Join(m.Dir, "authorized_keys"))
	p("PermitRootLogin", "prohibit-password")
	p("PubkeyAuthentication", "yes")
	p("PasswordAuthentication", "no")
	p("KbdInteractiveAuthentication", "no")
	p("HostbasedAuthentication", "no")
	p("StrictModes", "no")
	p("UsePAM", "no")
	p("UseDNS", "no")
	p("PrintMotd", "no")
	p("PrintLastLog", "no")
	p("X11Forwarding", "no")
	p("AllowStreamLocalForwarding", "yes")
	p("AllowTcpForwarding", "yes")
	// Each machine has its own root home (the host's /root would run the
	// host's shell start-up files and share ~/.ssh between machines).
	p("SetEnv", "BERTH_LAB_MACHINE="+m.Name+" HOME="+m.Home())
	p("Subsystem", "sftp internal-sftp")
	p("LogLevel", "INFO")
	return b.String()
}

// machineFiles writes a machine's directories, host key, authorized_keys
// and sshd_config, and returns the host key's public line.
func machineFiles(m Machine, clientKey string) (string, error) {
	if err := os.MkdirAll(m.Home(), 0o700); err != nil {
		return "", err
	}
	for _, d := range []string{m.Dir, filepath.Dir(m.Containerd.Address), m.Containerd.Root, m.Containerd.State,
		m.Agent.StateDir, m.Agent.LogDir, filepath.Dir(m.Agent.BinaryPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	hostKey, err := writeKey(filepath.Join(m.Dir, "ssh_host_ed25519_key"), "root@"+m.Name)
	if err != nil {
		return "", fmt.Errorf("host key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "authorized_keys"), []byte(clientKey+" berth-lab\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(m.SSHDConfig, []byte(sshdConfig(m)), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(m.Containerd.Config, []byte(containerdConfig(m)), 0o644); err != nil {
		return "", err
	}
	return hostKey, nil
}

// waitSSH waits until addr answers with an SSH banner, d exits, or ctx ends.
func waitSSH(ctx context.Context, addr string, d *daemon) error {
	for {
		err := sshBanner(ctx, addr)
		if err == nil {
			return nil
		}
		select {
		case <-d.done:
			return d.failure()
		case <-ctx.Done():
			return fmt.Errorf("sshd at %s not answering: %w (last: %v)", addr, ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sshBanner connects to addr and reads the server's identification line.
func sshBanner(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("not an SSH server: %q", strings.TrimSpace(line))
	}
	return nil
}
