process SHEST_SEGMENT {
    tag "${meta.id} chunk ${meta.chunk}"
    label 'process_medium'

    conda "${moduleDir}/../../../../containers/environment.yml"
    container 'shest:0.1.0'

    input:
    tuple val(meta), path(wsi), path(plan)
    path(cellpose_model)

    output:
    tuple val(meta), path("*.chunk-*.cells.parquet"), emit: cells
    tuple val("${task.process}"), val('shest'), eval('shest --version | sed "s/^shest //"'), emit: versions_shest, topic: versions
    tuple val("${task.process}"), val('cellpose'), eval('python -c "from importlib.metadata import version; print(version(\'cellpose\'))"'), emit: versions_cellpose, topic: versions
    tuple val("${task.process}"), val('scikit-image'), eval('python -c "from importlib.metadata import version; print(version(\'scikit-image\'))"'), emit: versions_skimage, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args      = task.ext.args ?: ''
    def prefix    = task.ext.prefix ?: "${meta.id}"
    def mpp_arg   = meta.mpp ? "--mpp ${meta.mpp}" : ''
    def model_arg = cellpose_model ? "--cellpose-model ${cellpose_model}" : ''
    // The device follows the accelerator that the config gives the task; never guessed here.
    def device    = task.accelerator ? 'cuda' : 'cpu'
    """
    export HOME="\$PWD/.home" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$HOME/matplotlib" NUMBA_CACHE_DIR="\$HOME/numba" HF_HOME="\$HOME/huggingface" TORCH_HOME="\$HOME/torch" CELLPOSE_LOCAL_MODELS_PATH="\$HOME/cellpose"
    mkdir -p "\$MPLCONFIGDIR"

    shest segment \\
        ${wsi} \\
        --plan ${plan} \\
        --chunk ${meta.chunk} \\
        --sample ${prefix} \\
        --outdir . \\
        --device ${device} \\
        ${mpp_arg} \\
        ${model_arg} \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    def chunk  = String.format('%04d', meta.chunk as int)
    """
    touch ${prefix}.chunk-${chunk}.cells.parquet
    """
}
