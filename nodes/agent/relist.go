package agent

import (
	"context"
	"fmt"

	"berth.dev/berth/nodes/api"
)

// relistCache is what the last relist saw, by pod key: how the workers
// find containers they did not make (adoption after a restart, orphans)
// and how exits are noticed (the kubelet's PLEG).
type relistCache struct {
	containers map[string]ContainerState // by id
	sandboxes  map[string]Sandbox        // by pod UID
	images     map[string]bool           // refs pulled by this agent process
}

// podKeyOf is the pod a container belongs to by its labels.
func podKeyOf(c ContainerState) string {
	if k := c.Labels[api.LabelPodName]; k != "" {
		return k
	}
	return "unknown/" + c.Labels[api.LabelPodUID]
}

// relistOnce lists the runtime, pokes the workers of pods whose containers
// changed, and makes workers for pods that have containers or sandboxes
// but no worker (they are stopped and removed, unless desired).
func (m *Manager) relistOnce(ctx context.Context) error {
	ctrs, err := m.rt.ListContainers(ctx)
	if err != nil {
		m.metrics.runtimeErrors.Inc()
		return fmt.Errorf("list containers: %w", err)
	}
	sbs, err := m.rt.ListSandboxes(ctx)
	if err != nil {
		m.metrics.runtimeErrors.Inc()
		return fmt.Errorf("list sandboxes: %w", err)
	}
	changed := map[string]bool{}
	newCtrs := make(map[string]ContainerState, len(ctrs))
	for _, c := range ctrs {
		if c.Labels[api.LabelManaged] != "true" {
			continue
		}
		newCtrs[c.ID] = c
	}
	newSbs := make(map[string]Sandbox, len(sbs))
	for _, s := range sbs {
		newSbs[s.PodUID] = s
	}

	m.mu.Lock()
	old := m.cache
	for id, c := range newCtrs {
		o, ok := old.containers[id]
		if !ok || o.State != c.State || o.ExitCode != c.ExitCode || !o.StartedAt.Equal(c.StartedAt) || !o.FinishedAt.Equal(c.FinishedAt) {
			changed[podKeyOf(c)] = true
		}
	}
	for id, o := range old.containers {
		if _, ok := newCtrs[id]; !ok {
			changed[podKeyOf(o)] = true
		}
	}
	for uid, s := range newSbs {
		if _, ok := old.sandboxes[uid]; !ok {
			changed[s.Pod] = true
		}
	}
	m.cache.containers, m.cache.sandboxes = newCtrs, newSbs
	var poke []*podWorker
	for key := range changed {
		if key == "" {
			continue
		}
		w, ok := m.workers[key]
		if !ok {
			w = m.workerLocked(key) // an orphan: its worker removes it
			m.log.Info("found pod that is not desired; removing it", "pod", key)
		}
		poke = append(poke, w)
	}
	m.mu.Unlock()
	for _, w := range poke {
		w.kick()
	}
	return nil
}

// cached returns the container ids and sandboxes the last relist saw for
// a pod key.
func (m *Manager) cached(key string) ([]string, map[string]Sandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, c := range m.cache.containers {
		if podKeyOf(c) == key {
			ids = append(ids, id)
		}
	}
	sbs := map[string]Sandbox{}
	for uid, s := range m.cache.sandboxes {
		if s.Pod == key {
			sbs[uid] = s
		}
	}
	return ids, sbs
}

// forget drops removed containers and sandboxes from the cache, so that
// workers do not look for them until a relist sees them again.
func (m *Manager) forget(ids, uids []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		delete(m.cache.containers, id)
	}
	for _, uid := range uids {
		delete(m.cache.sandboxes, uid)
	}
}

func (m *Manager) imageKnown(ref string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cache.images[ref]
}

func (m *Manager) setImageKnown(ref string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cache.images == nil {
		m.cache.images = map[string]bool{}
	}
	m.cache.images[ref] = true
}
