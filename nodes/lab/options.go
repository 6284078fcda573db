package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// The lab's names and address ranges. They are fixed, so there is at most
// one lab on a host.
const (
	// BridgeName is the lab bridge in the host namespace.
	BridgeName = "berth-lab0"
	// Prefix starts the name of every namespace and link the lab makes:
	// berth-lab0 (bridge), berth-labN (machine N's namespace, and the
	// host end of its veth pair).
	Prefix = "berth-lab"
	// MachineLink is the name of a machine's end of its veth pair, inside
	// its namespace.
	MachineLink = "eth0"
	// RegistryHost is the lab registry, as it appears in image references.
	RegistryHost = "198.18.0.1:5000"
	// MaxNodes is the most machines a lab has: the pod range 198.18.64.0/18
	// holds 64 /24s.
	MaxNodes = 64
	// SSHPort is the port of every machine's sshd.
	SSHPort = 22
)

// The lab's address ranges.
var (
	// LabRange holds every address the lab uses.
	LabRange = netip.MustParsePrefix("198.18.0.0/15")
	// MachineNet is the bridge's network; the bridge is its first address.
	MachineNet = netip.MustParsePrefix("198.18.0.0/24")
	// BridgeAddr is the bridge's address and the machines' gateway.
	BridgeAddr = netip.MustParsePrefix("198.18.0.1/24")
	// PodCIDR is the pod range, split into a /24 per machine.
	PodCIDR = netip.MustParsePrefix("198.18.64.0/18")
	// ServiceCIDR is the service range.
	ServiceCIDR = netip.MustParsePrefix("198.19.0.0/16")
)

// DefaultDir is where the CLI keeps a lab unless told otherwise.
const DefaultDir = "/var/lib/berth-lab"

// EchoVersions are the tags of berth/echo that Up pushes to the registry.
var EchoVersions = []string{"1", "2"}

// Options configure Up.
type Options struct {
	// Nodes is the number of machines, 1 to MaxNodes.
	Nodes int
	// Dir holds everything the lab keeps on disk; it must not exist or be
	// empty. Relative paths are taken from the working directory.
	Dir string
	// Quickstart is the example fleet committed to the lab's repository
	// (its machines.yaml replaced by the lab's machines). When nil, Up
	// reads examples/quickstart of the berth source tree that holds the
	// working directory.
	Quickstart fs.FS
	// SkipImages leaves the registry empty instead of building and pushing
	// the echo images (building them needs the berth source tree and a Go
	// toolchain).
	SkipImages bool
	// Wait makes Up wait, until its context ends, while another lab is up
	// on the host, instead of failing with ErrExists (tests of several
	// packages take turns this way).
	Wait bool
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("nodes: %d: must be between 1 and %d", o.Nodes, MaxNodes)
	}
	return validDir(o.Dir)
}

// validDir refuses directories that the generated sshd and containerd
// configurations could not name verbatim.
func validDir(dir string) error {
	if dir == "" {
		return errors.New("dir: must be set")
	}
	if strings.ContainsAny(dir, " \t\r\n\"'\\%#$`") {
		return fmt.Errorf("dir: %q: must not contain spaces, quotes, backslashes or any of %%#$`", dir)
	}
	if filepath.Clean(dir) == "/" {
		return errors.New("dir: must not be /")
	}
	return nil
}

// absDir makes dir absolute and clean.
func absDir(dir string) (string, error) {
	if err := validDir(dir); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("dir: %w", err)
	}
	if filepath.Clean(abs) == "/" {
		return "", errors.New("dir: must not be /")
	}
	return abs, nil
}

// maxSocketPath is the longest path a unix socket can have (sun_path is
// 108 bytes with its terminating NUL).
const maxSocketPath = 107

// longestSocket is the longest socket name under a run directory:
// containerd adds ".ttrpc" to its gRPC address for its ttrpc socket.
var longestSocket = "/lab" + strconv.Itoa(MaxNodes) + "/containerd.sock.ttrpc"

// runDirFor is where the lab in dir keeps its unix sockets: dir/run, or,
// when that is too long for a socket path, a directory in /run named by a
// hash of dir (so that Down finds it from dir alone).
func runDirFor(dir string) string {
	if d := filepath.Join(dir, "run"); len(d)+len(longestSocket) <= maxSocketPath {
		return d
	}
	sum := sha256.Sum256([]byte(dir))
	return "/run/" + Prefix + "-" + hex.EncodeToString(sum[:6])
}

// MachineName is the name of machine i (1-based).
func MachineName(i int) string { return "lab" + strconv.Itoa(i) }

// NetnsName is the network namespace of machine i.
func NetnsName(i int) string { return Prefix + strconv.Itoa(i) }

// MachineAddr is machine i's address on the lab bridge.
func MachineAddr(i int) netip.Addr {
	a := MachineNet.Addr().As4()
	a[3] = byte(10 + i)
	return netip.AddrFrom4(a)
}

// MachinePodCIDR is machine i's share of PodCIDR.
func MachinePodCIDR(i int) netip.Prefix {
	a := PodCIDR.Addr().As4()
	a[2] += byte(i - 1)
	return netip.PrefixFrom(netip.AddrFrom4(a), 24)
}

// Namespace is the containerd namespace of machine i's agent.
func Namespace(i int) string { return Prefix + strconv.Itoa(i) }
