package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage"
	"gopkg.in/yaml.v3"

	"berth.dev/berth/render/api/v1alpha1"
)

// Branch is the fleet repository's branch.
const Branch = "main"

// machinesFile is the file of the example fleet that the lab replaces.
const machinesFile = "machines.yaml"

// quickstartPath is the example fleet in the berth source tree.
const quickstartPath = "examples/quickstart"

// maxExampleFile bounds each file read from the example fleet.
const maxExampleFile = 1 << 20

// findQuickstart returns examples/quickstart of the berth source tree that
// holds the working directory.
func findQuickstart() (fs.FS, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", quickstartPath, err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && isBerthModule(b) {
			q := filepath.Join(d, filepath.FromSlash(quickstartPath))
			if _, err := os.Stat(q); err != nil {
				return nil, fmt.Errorf("find %s: %w", quickstartPath, err)
			}
			return os.DirFS(q), nil
		}
		if filepath.Dir(d) == d {
			return nil, fmt.Errorf("find %s: %s is not inside the berth source tree (module berth.dev/berth)", quickstartPath, wd)
		}
	}
}

func isBerthModule(gomod []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" && f[1] == "berth.dev/berth" {
			return true
		}
	}
	return false
}

// readExample reads every regular file of the example fleet (hidden ones
// left out); it must have a machines.yaml for the lab to replace.
func readExample(example fs.FS) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(example, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Size() > maxExampleFile {
			return fmt.Errorf("%s: larger than %d bytes", p, maxExampleFile)
		}
		b, err := fs.ReadFile(example, p)
		if err != nil {
			return err
		}
		files[p] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read example fleet: %w", err)
	}
	if _, ok := files[machinesFile]; !ok {
		return nil, fmt.Errorf("read example fleet: no %s", machinesFile)
	}
	return files, nil
}

// fleetFiles returns the files of the lab's fleet repository: the
// example's, with machines.yaml replaced by the lab's machines.
func fleetFiles(example map[string][]byte, l *Lab) (map[string][]byte, error) {
	files := maps.Clone(example)
	m, err := machinesYAML(l)
	if err != nil {
		return nil, err
	}
	files[machinesFile] = m
	return files, nil
}

// The Machine document as YAML, in the order a person writes it.
type (
	yamlMachine struct {
		APIVersion string          `yaml:"apiVersion"`
		Kind       string          `yaml:"kind"`
		Metadata   yamlMeta        `yaml:"metadata"`
		Spec       yamlMachineSpec `yaml:"spec"`
	}
	yamlMeta struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels,omitempty"`
		Annotations map[string]string `yaml:"annotations,omitempty"`
	}
	yamlMachineSpec struct {
		Address string    `yaml:"address"`
		SSH     yamlSSH   `yaml:"ssh"`
		PodCIDR string    `yaml:"podCIDR"`
		Agent   yamlAgent `yaml:"agent"`
	}
	yamlSSH struct {
		User    string `yaml:"user"`
		Port    int    `yaml:"port"`
		HostKey string `yaml:"hostKey"`
	}
	yamlAgent struct {
		StateDir          string `yaml:"stateDir"`
		Socket            string `yaml:"socket"`
		LogDir            string `yaml:"logDir"`
		ContainerdAddress string `yaml:"containerdAddress"`
		Namespace         string `yaml:"namespace"`
		BinaryPath        string `yaml:"binaryPath"`
	}
)

// machinesYAML is the lab's machines.yaml: one Machine per lab machine,
// with its address, pinned host key, pod CIDR and agent paths.
func machinesYAML(l *Lab) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# The lab's %d machines, written by berth lab up: network namespaces on one\n", len(l.Machines))
	b.WriteString("# host, each with its own sshd (host key pinned below) and containerd. Their\n")
	b.WriteString("# agents keep their files under the lab directory and use their own\n")
	b.WriteString("# containerd namespace (spec.agent.namespace).\n")
	for _, m := range l.Machines {
		doc := yamlMachine{
			APIVersion: v1alpha1.APIVersion,
			Kind:       "Machine",
			Metadata: yamlMeta{
				Name:   m.Name,
				Labels: map[string]string{"kubernetes.io/hostname": m.Name},
			},
			Spec: yamlMachineSpec{
				Address: m.Address.Addr().String(),
				SSH:     yamlSSH{User: "root", Port: SSHPort, HostKey: m.HostKey},
				PodCIDR: m.PodCIDR.String(),
				Agent: yamlAgent{
					StateDir:          m.Agent.StateDir,
					Socket:            m.Agent.Socket,
					LogDir:            m.Agent.LogDir,
					ContainerdAddress: m.Agent.ContainerdAddress,
					Namespace:         m.Agent.Namespace,
					BinaryPath:        m.Agent.BinaryPath,
				},
			},
		}
		out, err := yaml.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("machines.yaml: %w", err)
		}
		b.WriteString("---\n")
		b.Write(out)
	}
	return b.Bytes(), nil
}

// commitFleet creates the bare repository at dir with files committed on
// Branch, HEAD pointing at it. It uses go-git's object store only: no
// worktree, no git binary.
func commitFleet(dir string, files map[string][]byte, when time.Time) (plumbing.Hash, error) {
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		Bare:        true,
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(Branch)},
	})
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create fleet repository: %w", err)
	}
	st := repo.Storer
	tree, err := writeTree(st, files, "")
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create fleet repository: %w", err)
	}
	sig := object.Signature{Name: "berth lab", Email: "lab@berth.invalid", When: when}
	c := &object.Commit{
		Author:    sig,
		Committer: sig,
		Message:   "Lab fleet: examples/quickstart on this lab's machines\n\nWritten by berth lab up, with each machine's SSH host key pinned.\n",
		TreeHash:  tree,
	}
	h, err := storeObject(st, c)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create fleet repository: %w", err)
	}
	ref := plumbing.NewHashReference(plumbing.NewBranchReferenceName(Branch), h)
	if err := st.SetReference(ref); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create fleet repository: %w", err)
	}
	head := plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.NewBranchReferenceName(Branch))
	if err := st.SetReference(head); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create fleet repository: %w", err)
	}
	return h, nil
}

type encoder interface {
	Encode(plumbing.EncodedObject) error
}

func storeObject(st storage.Storer, o encoder) (plumbing.Hash, error) {
	obj := st.NewEncodedObject()
	if err := o.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return st.SetEncodedObject(obj)
}

// writeTree stores the tree of the files under prefix (slash-separated,
// "" for the root) and returns its hash.
func writeTree(st storage.Storer, files map[string][]byte, prefix string) (plumbing.Hash, error) {
	subdirs := map[string]bool{}
	var entries []object.TreeEntry
	for p, data := range files {
		if prefix != "" && !strings.HasPrefix(p, prefix+"/") {
			continue
		}
		rest := strings.TrimPrefix(p, prefix+"/")
		if prefix == "" {
			rest = p
		}
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			subdirs[rest[:i]] = true
			continue
		}
		blob := st.NewEncodedObject()
		blob.SetType(plumbing.BlobObject)
		w, err := blob.Writer()
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if _, err := w.Write(data); err != nil {
			return plumbing.ZeroHash, err
		}
		if err := w.Close(); err != nil {
			return plumbing.ZeroHash, err
		}
		h, err := st.SetEncodedObject(blob)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		entries = append(entries, object.TreeEntry{Name: rest, Mode: filemode.Regular, Hash: h})
	}
	for d := range subdirs {
		h, err := writeTree(st, files, path.Join(prefix, d))
		if err != nil {
			return plumbing.ZeroHash, err
		}
		entries = append(entries, object.TreeEntry{Name: d, Mode: filemode.Dir, Hash: h})
	}
	// git orders a tree's entries by name, a directory's name compared as
	// if it ended in "/".
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.Slice(entries, func(i, j int) bool { return key(entries[i]) < key(entries[j]) })
	return storeObject(st, &object.Tree{Entries: entries})
}

// knownHosts is a known_hosts file pinning every machine's host key under
// its name and address.
func knownHosts(l *Lab) []byte {
	var b bytes.Buffer
	for _, m := range l.Machines {
		fmt.Fprintf(&b, "%s,%s %s\n", m.Name, m.Address.Addr(), m.HostKey)
	}
	return b.Bytes()
}

// envFile is lab.env, to be sourced by a shell.
func envFile(l *Lab) []byte {
	var b bytes.Buffer
	b.WriteString("# The lab in " + l.Dir + ", written by berth lab up: . " + l.Env + "\n")
	fmt.Fprintf(&b, "export BERTH_REPO=%s\n", l.Repo)
	fmt.Fprintf(&b, "export BERTH_SSH_KEY=%s\n", l.SSHKey)
	fmt.Fprintf(&b, "export BERTH_KNOWN_HOSTS=%s\n", l.KnownHosts)
	return b.Bytes()
}

// fleet writes the repository, known_hosts and lab.env.
func (u *upper) fleet() error {
	l := u.lab
	files, err := fleetFiles(u.example, l)
	if err != nil {
		return err
	}
	if _, err := commitFleet(l.Repo, files, time.Now()); err != nil {
		return err
	}
	if err := os.WriteFile(l.KnownHosts, knownHosts(l), 0o644); err != nil {
		return fmt.Errorf("write known_hosts: %w", err)
	}
	if err := os.WriteFile(l.Env, envFile(l), 0o644); err != nil {
		return fmt.Errorf("write lab.env: %w", err)
	}
	return nil
}
