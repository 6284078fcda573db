package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
)

// pullError is a failed pull: it wraps agent.ErrImagePull and the
// registry's error, and reads as the latter (the sentinel is the reason,
// this the message).
type pullError struct {
	ref string
	err error
}

func (e *pullError) Error() string   { return "pull " + e.ref + ": " + e.err.Error() }
func (e *pullError) Unwrap() []error { return []error{agent.ErrImagePull, e.err} }

// normalizeRef returns the full name containerd stores an image under
// ("berth/echo:1" → "docker.io/berth/echo:1").
func normalizeRef(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %v", api.ErrInvalid, ref, err)
	}
	return named.String(), nil
}

// defaultPullPolicy is Kubernetes' default: Always for :latest or no tag
// (unless pinned by digest), IfNotPresent otherwise.
func defaultPullPolicy(ref string) corev1.PullPolicy {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return corev1.PullAlways
	}
	if _, ok := named.(reference.Digested); ok {
		return corev1.PullIfNotPresent
	}
	if t, ok := named.(reference.Tagged); ok && t.Tag() != "latest" {
		return corev1.PullIfNotPresent
	}
	return corev1.PullAlways
}

// EnsureImage makes ref present and unpacked according to policy (empty:
// Kubernetes' default for the reference).
func (r *Runtime) EnsureImage(ctx context.Context, ref string, policy corev1.PullPolicy, auth []api.Sensitive) (agent.Image, error) {
	name, err := normalizeRef(ref)
	if err != nil {
		return agent.Image{}, err
	}
	if policy == "" {
		policy = defaultPullPolicy(ref)
	}
	var img client.Image
	err = r.retry(ctx, func(ctx context.Context) error {
		img = nil
		if policy != corev1.PullAlways {
			existing, err := r.client.GetImage(ctx, name)
			switch {
			case err == nil:
				img = existing
			case !errdefs.IsNotFound(err):
				return err
			case policy == corev1.PullNever:
				return fmt.Errorf("%w: container image %q is not present with pull policy of Never", agent.ErrImageNeverPull, ref)
			}
		}
		if img != nil {
			return r.unpack(ctx, img)
		}
		if err := r.ensureNamespace(ctx); err != nil {
			return err
		}
		resolver, err := r.hosts.resolver(auth)
		if err != nil {
			return &pullError{ref, err}
		}
		start := time.Now()
		img, err = r.client.Pull(ctx, name,
			client.WithResolver(resolver),
			client.WithPullUnpack,
			client.WithPullSnapshotter(snapshotter),
			client.WithPullLabels(map[string]string{api.LabelManaged: "true"}),
		)
		if err != nil {
			if unavailable(err) || ctx.Err() != nil {
				return err
			}
			return &pullError{ref, trimPullError(err, name)}
		}
		r.log.Info("pulled image", "image", ref, "duration", time.Since(start))
		return nil
	})
	if err != nil {
		return agent.Image{}, err
	}
	return r.describe(ctx, ref, img)
}

// trimPullError drops containerd's wrapping that repeats the reference
// ('failed to resolve reference "r": r: not found' → "not found").
func trimPullError(err error, name string) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "failed to resolve reference ")
	msg = strings.TrimPrefix(msg, `"`+name+`": `)
	msg = strings.TrimPrefix(msg, name+": ")
	return errors.New(msg)
}

// unpack unpacks img for the snapshotter unless it is already.
func (r *Runtime) unpack(ctx context.Context, img client.Image) error {
	ok, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil || ok {
		return err
	}
	if err := img.Unpack(ctx, snapshotter); err != nil {
		return fmt.Errorf("unpack %s: %w", img.Name(), err)
	}
	return nil
}

// describe reads what agent.Image tells of img.
func (r *Runtime) describe(ctx context.Context, ref string, img client.Image) (agent.Image, error) {
	ctx = r.ctx(ctx)
	cfg, err := img.Config(ctx)
	if err != nil {
		return agent.Image{}, fmt.Errorf("image %s: config: %w", ref, err)
	}
	spec, err := img.Spec(ctx)
	if err != nil {
		return agent.Image{}, fmt.Errorf("image %s: config: %w", ref, err)
	}
	return agent.Image{Ref: ref, ID: cfg.Digest.String(), User: spec.Config.User}, nil
}

// ImportArchive imports the images of an OCI (or docker save) archive,
// for this machine's platform, and unpacks them: for machines with no
// registry. It returns the images imported, by their full names.
func (r *Runtime) ImportArchive(ctx context.Context, path string) ([]agent.Image, error) {
	var out []agent.Image
	err := r.retry(ctx, func(ctx context.Context) error {
		out = out[:0]
		if err := r.ensureNamespace(ctx); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("import %s: %w", path, err)
		}
		defer f.Close()
		imgs, err := r.client.Import(ctx, f, client.WithImageLabels(map[string]string{api.LabelManaged: "true"}))
		if err != nil {
			if unavailable(err) {
				return err
			}
			return fmt.Errorf("import %s: %w", path, err)
		}
		for _, rec := range imgs {
			img := client.NewImage(r.client, rec)
			if err := r.unpack(ctx, img); err != nil {
				return fmt.Errorf("import %s: %w", path, err)
			}
			d, err := r.describe(ctx, rec.Name, img)
			if err != nil {
				return fmt.Errorf("import %s: %w", path, err)
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}
