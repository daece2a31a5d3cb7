process SHEST_NICHECOHORT {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/../../../../containers/environment.yml"
    container 'shest:0.1.0'

    input:
    // Per-slide niche tables of every sample, sorted by file name so that -resume sees the same task.
    tuple val(meta), path(tables, stageAs: 'samples/*')

    output:
    tuple val(meta), path("*.csv"), emit: tables
    tuple val("${task.process}"), val('shest'), eval('shest --version | sed "s/^shest //"'), emit: versions_shest, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    export HOME="\$PWD/.home" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$HOME/matplotlib" NUMBA_CACHE_DIR="\$HOME/numba" HF_HOME="\$HOME/huggingface" TORCH_HOME="\$HOME/torch" CELLPOSE_LOCAL_MODELS_PATH="\$HOME/cellpose"
    mkdir -p "\$MPLCONFIGDIR"

    shest niche-cohort \\
        ${tables} \\
        --sample ${prefix} \\
        --outdir . \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}_infiltration.csv
    """
}
