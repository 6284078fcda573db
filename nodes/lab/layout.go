package lab

import (
	"net/netip"
	"path/filepath"
)

// Lab describes a lab that Up made: where everything is.
type Lab struct {
	// Dir holds the lab's files; RunDir its unix sockets (Dir/run, or a
	// shorter directory in /run for a long Dir).
	Dir    string `json:"dir"`
	RunDir string `json:"runDir"`
	// Bridge is the lab bridge; BridgeAddr its address (the machines'
	// gateway, the registry's address).
	Bridge     string       `json:"bridge"`
	BridgeAddr netip.Prefix `json:"bridgeAddr"`
	Machines   []Machine    `json:"machines"`
	// Registry is the plain-HTTP registry's host:port; RegistryDir its
	// storage and configuration.
	Registry    string   `json:"registry"`
	RegistryDir string   `json:"registryDir"`
	Images      []string `json:"images,omitempty"`
	// Repo is the bare fleet repository (branch main).
	Repo string `json:"repo"`
	// SSHKey is the lab's client private key (authorized for root on every
	// machine); KnownHosts pins every machine's host key; Env exports
	// BERTH_REPO, BERTH_SSH_KEY and BERTH_KNOWN_HOSTS.
	SSHKey     string `json:"sshKey"`
	KnownHosts string `json:"knownHosts"`
	Env        string `json:"env"`
}

// Machine is one lab machine.
type Machine struct {
	Name string `json:"name"`
	// Netns is the machine's network namespace, bind-mounted at NetnsPath.
	Netns     string `json:"netns"`
	NetnsPath string `json:"netnsPath"`
	// HostLink is the host end of the machine's veth pair (a bridge port);
	// the machine's end is MachineLink.
	HostLink string       `json:"hostLink"`
	Address  netip.Prefix `json:"address"`
	PodCIDR  netip.Prefix `json:"podCIDR"`
	// Dir holds the machine's files.
	Dir string `json:"dir"`
	// HostKey is the sshd's public host key in authorized_keys format.
	HostKey    string      `json:"hostKey"`
	SSHDConfig string      `json:"sshdConfig"`
	Containerd Containerd  `json:"containerd"`
	Agent      AgentConfig `json:"agent"`
}

// SSHAddr is the machine's sshd, host:port.
func (m Machine) SSHAddr() string {
	return netip.AddrPortFrom(m.Address.Addr(), SSHPort).String()
}

// Home is root's home directory on the machine (sshd sets HOME to it).
func (m Machine) Home() string { return filepath.Join(m.Dir, "root") }

// Containerd is a machine's containerd daemon.
type Containerd struct {
	Address string `json:"address"`
	Root    string `json:"root"`
	State   string `json:"state"`
	Config  string `json:"config"`
	Log     string `json:"log"`
}

// AgentConfig is what a machine's agent must be told (see the package
// documentation).
type AgentConfig struct {
	StateDir          string `json:"stateDir"`
	Socket            string `json:"socket"`
	LogDir            string `json:"logDir"`
	ContainerdAddress string `json:"containerdAddress"`
	// Namespace is the containerd namespace of the agent's containers.
	Namespace string `json:"namespace"`
	// BinaryPath is where bootstrap installs the berth binary.
	BinaryPath string `json:"binaryPath"`
}

// Args are the `berth agent` flags for this configuration.
func (a AgentConfig) Args() []string {
	return []string{
		"--state-dir", a.StateDir,
		"--socket", a.Socket,
		"--containerd-address", a.ContainerdAddress,
		"--log-dir", a.LogDir,
		"--namespace", a.Namespace,
	}
}

// netnsDir is where named network namespaces are bind-mounted (iproute2's
// convention).
const netnsDir = "/run/netns"

// layout computes where everything of a lab of n machines in dir (absolute)
// goes. It is a pure function of its arguments.
func layout(dir string, n int) *Lab {
	run := runDirFor(dir)
	l := &Lab{
		Dir:         dir,
		RunDir:      run,
		Bridge:      BridgeName,
		BridgeAddr:  BridgeAddr,
		Registry:    RegistryHost,
		RegistryDir: filepath.Join(dir, "registry"),
		Repo:        filepath.Join(dir, "fleet.git"),
		SSHKey:      filepath.Join(dir, "id_ed25519"),
		KnownHosts:  filepath.Join(dir, "known_hosts"),
		Env:         filepath.Join(dir, "lab.env"),
	}
	for i := 1; i <= n; i++ {
		name := MachineName(i)
		md := filepath.Join(dir, name)
		mr := filepath.Join(run, name)
		l.Machines = append(l.Machines, Machine{
			Name:       name,
			Netns:      NetnsName(i),
			NetnsPath:  filepath.Join(netnsDir, NetnsName(i)),
			HostLink:   NetnsName(i),
			Address:    netip.PrefixFrom(MachineAddr(i), MachineNet.Bits()),
			PodCIDR:    MachinePodCIDR(i),
			Dir:        md,
			SSHDConfig: filepath.Join(md, "sshd_config"),
			Containerd: Containerd{
				Address: filepath.Join(mr, "containerd.sock"),
				Root:    filepath.Join(md, "containerd", "root"),
				State:   filepath.Join(md, "containerd", "state"),
				Config:  filepath.Join(md, "containerd", "config.toml"),
				Log:     filepath.Join(md, "containerd", "containerd.log"),
			},
			Agent: AgentConfig{
				StateDir:          filepath.Join(md, "agent"),
				Socket:            filepath.Join(mr, "agent.sock"),
				LogDir:            filepath.Join(md, "log", "pods"),
				ContainerdAddress: filepath.Join(mr, "containerd.sock"),
				Namespace:         Namespace(i),
				BinaryPath:        filepath.Join(md, "bin", "berth"),
			},
		})
	}
	return l
}
