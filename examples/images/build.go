// Package images builds berth's test workload images with project code:
// the echo server (examples/images/echo) compiled statically and layered on
// Debian's static busybox, as a reproducible OCI image, written as an OCI
// archive for containerd's import or pushed to a registry.
//
// The images berth/echo:1 and berth/echo:2 differ only in the version the
// server answers: they share the busybox layer byte for byte, and rebuilding
// either gives the same digests (fixed times, sorted entries, no build or
// VCS stamps). Building compiles Go code, so it runs inside the berth source
// tree with a Go toolchain on PATH (tests and `go run` do).
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// EchoRepository is the repository of the echo images, without a registry.
	EchoRepository = "berth/echo"
	// EchoPackage is the Go package compiled into the image's /echo.
	EchoPackage = "berth.dev/berth/examples/images/echo"
	// EchoPort is the port the echo server listens on unless told otherwise.
	EchoPort = 8080
	// NonRootUID is the uid (and gid) of the image's "nonroot" user.
	NonRootUID = 65532
)

// BusyboxPath is the static busybox put into the image (Debian's
// busybox-static installs it there).
var BusyboxPath = "/bin/busybox"

// BusyboxApplets are linked to busybox in the image's /bin.
var BusyboxApplets = []string{
	"cat", "date", "echo", "env", "false", "grep", "head", "hostname", "id",
	"kill", "ls", "mkdir", "nc", "ps", "rm", "sh", "sleep", "tail", "test",
	"touch", "true", "wget",
}

// Epoch is the time of every file and history entry in the images, so that
// rebuilding gives the same digests.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Path is the PATH set in the image's environment.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const (
	passwd = "root:x:0:0:root:/root:/bin/sh\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group = "root:x:0:\n" +
		"nonroot:x:65532:\n" +
		"nogroup:x:65534:\n"
)

// EchoRef returns the reference of the echo image of a version on a
// registry host ("127.0.0.1:5000"); an empty host leaves the registry out.
func EchoRef(host, version string) string {
	if host == "" {
		return EchoRepository + ":" + version
	}
	return host + "/" + EchoRepository + ":" + version
}

// cache keeps what a process has built: compiling echo takes seconds, and
// tests ask for the same images many times. Only successes are kept.
var cache struct {
	sync.Mutex
	busybox  v1.Layer
	binaries map[string]v1.Layer // by version
}

// BuildEcho returns the echo image answering version, for the machine's
// architecture (runtime.GOARCH). The compiled binary and the busybox layer are
// cached for the life of the process.
func BuildEcho(ctx context.Context, version string) (v1.Image, error) {
	if version == "" || strings.ContainsAny(version, " \t\n'\"") {
		return nil, fmt.Errorf("build echo: invalid version %q", version)
	}
	base, err := busyboxLayer()
	if err != nil {
		return nil, fmt.Errorf("build echo %s: %w", version, err)
	}
	bin, err := echoLayer(ctx, version)
	if err != nil {
		return nil, fmt.Errorf("build echo %s: %w", version, err)
	}

	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "berth: busybox from " + BusyboxPath, Comment: "berth.dev/berth/examples/images"}},
		mutate.Addendum{Layer: bin, History: v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: "berth: go build " + EchoPackage, Comment: "berth.dev/berth/examples/images"}},
	)
	if err != nil {
		return nil, fmt.Errorf("build echo %s: %w", version, err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("build echo %s: %w", version, err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: Epoch}
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Config = v1.Config{
		Entrypoint:   []string{"/echo"},
		Env:          []string{"PATH=" + Path},
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", EchoPort): {}},
		WorkingDir:   "/",
		// User stays empty (root): a pod's runAsUser chooses, and NonRootUID
		// exists for that.
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("build echo %s: %w", version, err)
	}
	return img, nil
}

func busyboxLayer() (v1.Layer, error) {
	cache.Lock()
	defer cache.Unlock()
	if cache.busybox != nil {
		return cache.busybox, nil
	}
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w (install Debian's busybox-static)", err)
	}
	if err := checkStatic(BusyboxPath); err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	entries := []entry{
		{name: "bin/", mode: 0o755},
		{name: "bin/busybox", mode: 0o755, data: bb},
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o755, uid: NonRootUID},
		{name: "root/", mode: 0o700},
		{name: "tmp/", mode: 0o1777},
	}
	for _, a := range BusyboxApplets {
		entries = append(entries, entry{name: "bin/" + a, link: "busybox"})
	}
	l, err := layer(entries)
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	cache.busybox = l
	return l, nil
}

// checkStatic refuses a dynamically linked busybox (Debian's "busybox"
// package rather than "busybox-static"): it would not run in the image.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (install Debian's busybox-static)", path)
		}
	}
	return nil
}

func echoLayer(ctx context.Context, version string) (v1.Layer, error) {
	cache.Lock()
	defer cache.Unlock()
	if l := cache.binaries[version]; l != nil {
		return l, nil
	}
	bin, err := compileEcho(ctx, version)
	if err != nil {
		return nil, err
	}
	l, err := layer([]entry{{name: "echo", mode: 0o755, data: bin}})
	if err != nil {
		return nil, fmt.Errorf("echo layer: %w", err)
	}
	if cache.binaries == nil {
		cache.binaries = map[string]v1.Layer{}
	}
	cache.binaries[version] = l
	return l, nil
}

// compileEcho builds a static, reproducible echo binary answering version.
func compileEcho(ctx context.Context, version string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "berth-echo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "echo")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-X main.version="+version+" -s -w", "-o", out, EchoPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s: %w: %s", EchoPackage, err, strings.TrimSpace(stderr.String()))
	}
	return os.ReadFile(out)
}

// entry is one file, directory (name ends in "/") or symlink (link set) of a
// layer, owned by root unless uid says otherwise.
type entry struct {
	name string
	mode int64
	uid  int
	data []byte
	link string
}

// layer makes a gzip-compressed OCI layer of entries, sorted by name, every
// one stamped with Epoch, so that equal entries give equal digests.
func layer(entries []entry) (v1.Layer, error) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.uid,
			ModTime: Epoch,
			Format:  tar.FormatPAX,
		}
		switch {
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag = tar.TypeDir
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// WriteOCIArchive writes img as an OCI image layout in a tar file at path,
// named ref: the form containerd's Import (and `ctr image import`) takes.
// The index names the image twice, as containerd's own export does: the
// full reference in "io.containerd.image.name" ("berth/echo:2" becomes
// "docker.io/berth/echo:2") and the tag in "org.opencontainers.image.ref.name".
func WriteOCIArchive(img v1.Image, ref, path string) error {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("write OCI archive: %w", err)
	}
	refName := named.String()
	if tagged, ok := named.(reference.Tagged); ok {
		refName = tagged.Tag()
	}
	dir, err := os.MkdirTemp("", "berth-oci-")
	if err != nil {
		return fmt.Errorf("write OCI archive: %w", err)
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write OCI archive: %w", err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          named.String(),
		"org.opencontainers.image.ref.name": refName,
	})); err != nil {
		return fmt.Errorf("write OCI archive: %w", err)
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write OCI archive: %w", err)
	}
	tw := tar.NewWriter(f)
	err = tw.AddFS(os.DirFS(dir))
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write OCI archive %s: %w", path, err)
	}
	return nil
}

// Push writes img to ref's registry, over plain HTTP when plainHTTP is set
// (a loopback or lab registry). Registries are reached anonymously.
func Push(ctx context.Context, img v1.Image, ref string, plainHTTP bool) error {
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// ErrNoImages is returned by PushEcho when asked for no versions.
var ErrNoImages = errors.New("no versions to build")

// Pushed is an image PushEcho wrote.
type Pushed struct {
	Ref    string
	Digest v1.Hash
}

// PushEcho builds the echo images of versions and pushes them to the registry
// at host ("127.0.0.1:5000") as berth/echo:<version>.
func PushEcho(ctx context.Context, host string, plainHTTP bool, versions ...string) ([]Pushed, error) {
	if len(versions) == 0 {
		return nil, ErrNoImages
	}
	var out []Pushed
	for _, v := range versions {
		img, err := BuildEcho(ctx, v)
		if err != nil {
			return nil, err
		}
		ref := EchoRef(host, v)
		if err := Push(ctx, img, ref, plainHTTP); err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
		out = append(out, Pushed{Ref: ref, Digest: d})
	}
	return out, nil
}
