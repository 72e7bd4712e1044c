"""Who is in my photos? Group the faces of a photo collection by person, without knowing how many people there are.

The library side of ``gallery.py cluster`` and ``gallery.py name``:

1. :func:`find_faces`: every face of every photo is found (a face detector of
   :mod:`facetorch.recognition.detectors`), aligned (5 points, for models trained aligned),
   scored for quality (:func:`face_quality`: size, sharpness, pose from the 5 points) and embedded,
   the chips of many photos in one batch;
2. :func:`knn_graph`: each face's ``k`` most similar faces (FAISS, exact inner product on unit
   vectors; HNSW beyond :data:`EXACT_LIMIT` faces), so the graph costs O(N k) memory, never O(N^2);
3. :func:`average_linkage`: agglomerative clustering with average linkage on that graph, cut at a
   cosine threshold. With unit-length embeddings the average similarity of two groups is the dot
   product of their sums divided by their sizes, so it is exact (not an estimate from the graph's
   edges); the graph only says which groups may meet. The threshold is derived from the model's
   calibrated pair threshold (:func:`cluster_threshold`). The other candidates measured against
   it live here too (:func:`chinese_whispers`, :func:`rank_order`, :func:`sklearn_agglomerative`,
   :func:`hdbscan_labels`); ``docs/clustering.md`` has the table that chose it.

Faces that join no group get the label ``-1`` (:data:`NO_CLUSTER`); groups are numbered from 0, the
largest first. :func:`make_cluster_set` writes a test collection (photos of a folder of people
under shuffled names, and the truth); ``facetorch.bench.clustering`` scores a run against it.
"""

from __future__ import annotations

from facetorch.recognition.clustering.faces import (  # noqa: F401  (the package's names)
    QUALITY_SIDE,
    SHARPNESS_REFERENCE,
    SIZE_REFERENCE,
    FaceTable,
    FoundFaces,
    _channels,
    _Chips,
    collection_files,
    face_quality,
    find_faces,
    make_cluster_set,
)
from facetorch.recognition.clustering.graph import (  # noqa: F401  (the package's names)
    EXACT_LIMIT,
    KNOWN_PAIR_THRESHOLDS,
    LFW_FACE_FRACTIONS,
    NO_CLUSTER,
    THRESHOLD_OFFSET,
    TRUTH_FIELDS,
    TRUTH_NAME,
    _edges,
    _faiss,
    _pair_dots,
    _reciprocal_round,
    _start_groups,
    _unit,
    average_linkage,
    chinese_whispers,
    cluster_threshold,
    components,
    hdbscan_labels,
    knn_graph,
    number_by_size,
    rank_order,
    sklearn_agglomerative,
)
from facetorch.recognition.clustering.runs import (  # noqa: F401  (the package's names)
    COLUMNS,
    CSV_FIELDS,
    CSV_NAME,
    FACES_NAME,
    LEFT_OUT_NAME,
    METHODS,
    RUN_FORMAT,
    SHEETS,
    SKIPPED_NAME,
    TILE,
    ClusterRun,
    _box_text,
    _missing_tile,
    _sheet_plan,
    _write_faces,
    centre_scores,
    contact_sheet,
    csv_rows,
    face_tile,
    group_faces,
    load_run,
    rename_in_run,
    save_run,
    write_index,
    write_sheets,
)

__all__ = [
    "EXACT_LIMIT",
    "NO_CLUSTER",
    "TRUTH_FIELDS",
    "FaceTable",
    "average_linkage",
    "chinese_whispers",
    "cluster_threshold",
    "collection_files",
    "components",
    "face_quality",
    "find_faces",
    "hdbscan_labels",
    "knn_graph",
    "make_cluster_set",
    "number_by_size",
    "rank_order",
    "sklearn_agglomerative",
]
