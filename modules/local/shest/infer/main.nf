process SHEST_INFER {
    tag "${meta.id}"
    label 'process_gpu'

    conda "${moduleDir}/../../../../containers/environment.yml"
    container 'shest:0.1.0-cuda'

    input:
    tuple val(meta), path(wsi), path(cells)
    // Model weights are staged like any input, so a task never downloads them.
    // Each is an empty list when not given (demo model, or the checkpoint's own panel).
    path(checkpoint)
    path(backbone)
    path(panel)

    output:
    tuple val(meta), path("*.h5ad")               , emit: h5ad
    tuple val(meta), path("*.cells.geojson")      , emit: geojson
    tuple val(meta), path("*.overlay.png")        , emit: overlay
    tuple val(meta), path("*_celltypes_mqc.tsv")  , emit: mqc
    tuple val("${task.process}"), val('shest'), eval('shest --version | sed "s/^shest //"'), emit: versions_shest, topic: versions
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), emit: versions_torch, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args      = task.ext.args ?: ''
    def prefix    = task.ext.prefix ?: "${meta.id}"
    def mpp_arg   = meta.mpp ? "--mpp ${meta.mpp}" : ''
    def model_arg = [
        checkpoint ? "--checkpoint ${checkpoint}" : '',
        backbone   ? "--backbone ${backbone}"     : '',
        panel      ? "--panel ${panel}"           : ''
    ].findAll { arg -> arg }.join(' ')
    // The gpu profile gives process_gpu tasks one accelerator (conf/base.config).
    def device    = task.accelerator ? 'cuda' : 'cpu'
    // Tile-building processes feed a GPU; on the CPU the model needs the cores itself.
    def workers   = task.accelerator ? task.cpus : 0
    """
    export HOME="\$PWD/.home" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$HOME/matplotlib" NUMBA_CACHE_DIR="\$HOME/numba" HF_HOME="\$HOME/huggingface" TORCH_HOME="\$HOME/torch" CELLPOSE_LOCAL_MODELS_PATH="\$HOME/cellpose"
    mkdir -p "\$MPLCONFIGDIR"

    shest infer \\
        ${wsi} \\
        --cells ${cells} \\
        --sample ${prefix} \\
        --outdir . \\
        --device ${device} \\
        --workers ${workers} \\
        ${mpp_arg} \\
        ${model_arg} \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.h5ad
    touch ${prefix}.cells.geojson
    touch ${prefix}.overlay.png
    touch ${prefix}_celltypes_mqc.tsv
    """
}
