"""drain3's ``Drain.add_log_message``, giving exactly its answers with less Python work per line.

:class:`FastDrain` is a :class:`drain3.drain.Drain` whose ``add_log_message`` finds the same
cluster, makes the same template and the same change, grows the same size and touches and evicts
in drain3's LRU in the same order as drain3 0.9.11's, for the configuration :func:`detectors.logs.make_miner`
uses and any other (a drain that profiles, or whose line holds drain3's ``<*>`` as a token, takes
drain3's own code for that part). Every other method is drain3's, unchanged.

What drain3 does for a line of ``n`` tokens (whitespace-split after ``strip()``; with
``extra_delimiters``, drain3's own tokenizer is used):

1. the leaf: the root's child keyed ``str(n)``, then for each of the first
   ``min(max_node_depth, n) - 1`` tokens the child keyed by the token, else the ``<*>`` child,
   else no match;
2. among the leaf's cluster ids, in order, those still in ``id_to_cluster`` (read without an LRU
   touch): ``sim`` = the number of template positions that are not ``<*>`` and equal the line's
   token, over ``n``; ``param_count`` = the template's ``<*>`` count. The best is the first with
   the highest ``sim``, and among equal ``sim`` the first with the most ``<*>`` (strictly more
   replaces). It matches if ``sim >= sim_th``;
3. no match: a new cluster (the next id), stored in the LRU (which evicts the least recently
   used cluster when full) and added to the prefix tree (drain3's ``add_seq_to_prefix_tree``);
4. a match: the template becomes the line's tokens where they equal it, ``<*>`` elsewhere (a
   change, "cluster_template_changed", when that differs, else "none"), the size grows by one and
   the cluster is touched in the LRU.

Here, all templates in a leaf have the line's length (a leaf hangs under ``str(n)`` and a
template never changes length), so comparing ``sim`` as counts is comparing drain3's floats. The
count is ``sum(map(operator.eq, template, tokens))`` (in C): when no token of the line is ``<*>``,
a ``<*>`` position of the template never equals the line's token, so it counts only the positions
drain3 counts. A line with a ``<*>`` token is counted by drain3's ``get_seq_distance``. The
template changes exactly when some non-``<*>`` position differs, that is when
``sim + param_count < n``; the new template is then drain3's ``create_template``.

Snapshots: a :class:`FastDrain` pickles as a plain ``Drain`` (same attributes, none of the
remembered counts), so a snapshot reads the same with or without this module, and
:func:`upgrade` turns a restored ``Drain`` back into a :class:`FastDrain` (same object, same state).
"""
from __future__ import annotations

import copyreg
from operator import eq

from drain3.drain import Drain, LogCluster, LogClusterCache
from drain3.simple_profiler import NullProfiler

__all__ = ["FastDrain", "upgrade"]


def _lru_parts(cache) -> tuple[object, dict | None, object | None]:
    """``cache`` (drain3's cluster store), the mapping under it (read without an LRU touch) and
    the LRU's order, when the store is cachetools' ``LRUCache`` as drain3 0.9.11 builds it (or a
    plain dict, without a limit); ``None`` for those otherwise, and the public (slower) calls are
    used."""
    if isinstance(cache, dict):
        return cache, cache, None
    if type(cache) is LogClusterCache:
        data = getattr(cache, "_Cache__data", None)
        order = getattr(cache, "_LRUCache__order", None)
        if type(data) is dict and hasattr(order, "move_to_end"):
            return cache, data, order
    return cache, None, None


class FastDrain(Drain):
    """:class:`drain3.drain.Drain` with a faster ``add_log_message`` (same answers, same state)."""

    # cluster id -> (its template tuple when counted, that template's "<*>" count). Remembered
    # answers only, checked against the cluster's current template by identity; not pickled.
    _params: dict | None = None
    _lru: tuple = (None, None, None)  # _lru_parts of id_to_cluster, for the store it was read from

    def __reduce_ex__(self, protocol):
        # A plain Drain with the same attributes: what copyreg gives a plain Drain at protocols
        # 0 and 1, readable at every protocol and by code without this module.
        state = {k: v for k, v in self.__dict__.items() if k not in ("_params", "_lru")}
        return copyreg._reconstructor, (Drain, object, None), state

    def _store(self) -> tuple:
        lru = self._lru
        if lru[0] is not self.id_to_cluster:
            lru = self._lru = _lru_parts(self.id_to_cluster)
        return lru

    def touch(self, cluster: LogCluster) -> None:
        """What drain3 does to its LRU when a line matches ``cluster`` (which it holds):
        ``self.id_to_cluster[cluster.cluster_id]``."""
        store, _, order = self._store()
        if order is not None:
            order.move_to_end(cluster.cluster_id)  # what LRUCache.__getitem__ does for a key it holds
        else:
            store[cluster.cluster_id]  # noqa: B018 - drain3's LRU touch

    def add_log_message(self, content: str):
        if type(self.profiler) is not NullProfiler:
            return Drain.add_log_message(self, content)
        tokens = self.get_content_as_tokens(content) if self.extra_delimiters else content.split()
        n = len(tokens)
        param = self.param_str
        store, data, _ = self._store()
        if n == 0 or data is None:
            match = self.tree_search(self.root_node, tokens, self.sim_th, False)
            sim = params = -1
        else:
            match, sim, params = self._search(tokens, n, param, data)

        if match is None:  # drain3's code, verbatim
            self.clusters_counter += 1
            cluster_id = self.clusters_counter
            match = LogCluster(tokens, cluster_id)
            store[cluster_id] = match
            self.add_seq_to_prefix_tree(self.root_node, match)
            return match, "cluster_created"

        if sim >= 0 and sim + params == n:
            update = "none"
        else:
            template = match.log_template_tokens
            new = tuple(self.create_template(tokens, template))
            if new == template:
                update = "none"
            else:
                match.log_template_tokens = new
                update = "cluster_template_changed"
        match.size += 1
        self.touch(match)
        return match, update

    def _search(self, tokens: list, n: int, param: str, data: dict):
        """drain3's ``tree_search`` then ``fast_match`` with ``include_params=False``, for a line
        of ``n >= 1`` tokens: (best cluster or None, its count of equal non-``<*>`` positions,
        its ``<*>`` count)."""
        node = self.root_node.key_to_child_node.get(str(n))
        if node is None:
            return None, -1, -1
        depth, max_depth = 1, self.max_node_depth
        for token in tokens:
            if depth >= max_depth or depth == n:
                break
            children = node.key_to_child_node
            node = children.get(token)
            if node is None:
                node = children.get(param)
            if node is None:
                return None, -1, -1
            depth += 1

        remembered = self._params
        if remembered is None:
            remembered = self._params = {}
        star = param in tokens
        line = tuple(tokens)
        best, best_sim, best_params = None, -1, -1
        for cid in node.cluster_ids:
            cluster = data.get(cid)
            if cluster is None:
                continue
            template = cluster.log_template_tokens
            if not star and template == line:
                # All n positions equal and none is "<*>": the highest similarity there is, and no
                # cluster after it can replace it (that takes more "<*>", so fewer equal tokens).
                if best_sim < n:
                    best, best_sim, best_params = cluster, n, 0
                break
            seen = remembered.get(cid)
            if seen is None or seen[0] is not template:
                seen = remembered[cid] = (template, template.count(param))
            params = seen[1]
            if star:
                sim = sum(1 for a, b in zip(template, tokens) if a != param and a == b)
            else:
                sim = sum(map(eq, template, tokens))
            if sim > best_sim or (sim == best_sim and params > best_params):
                best, best_sim, best_params = cluster, sim, params
        if len(remembered) > 2 * len(data) + 64:  # forget evicted clusters
            self._params = {cid: v for cid, v in remembered.items() if cid in data}
        if best is None or not float(best_sim) / n >= self.sim_th:  # drain3's test, as it is written
            return None, -1, -1
        return best, best_sim, best_params


def upgrade(drain: Drain) -> Drain:
    """``drain`` as a :class:`FastDrain` when it is a plain drain3 ``Drain`` (a restored snapshot);
    the same object, its state untouched. Anything else is returned as it is."""
    if type(drain) is Drain:
        drain.__class__ = FastDrain
    return drain
