// Package sshx is how berth reaches a machine: an SSH transport to it and
// the bootstrap of berth's agent over that transport.
//
// A Conn is one SSH connection to one Machine, authenticated with the
// controller's key (a key file or the running ssh-agent) and pinned to the
// machine's host key (the Machine's spec.ssh.hostKey or a known_hosts
// file). It keeps itself alive with keepalive@openssh.com requests, redials
// with backoff on the next use after a failure, and holds at most a few
// channels open at once so that it stays under sshd's MaxSessions. The agent
// is reached through it with streamlocal forwarding (DialUnix): no port is
// ever opened on a machine.
//
// Bootstrap installs or upgrades the agent: it checks the machine's
// platform and prerequisites, uploads the berth binary to a temporary file,
// verifies its sha256 on the machine before renaming it into place, starts
// the agent as a systemd unit or a detached process, and waits until the
// agent answers with a version the controller agrees with. Uninstall takes
// it away again.
package sshx
