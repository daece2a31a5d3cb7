process SHEST_MERGECELLS {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/../../../../containers/environment.yml"
    container 'shest:0.1.0'

    input:
    // Chunk tables of one slide, sorted by file name so that -resume sees the same task.
    tuple val(meta), path(chunks, stageAs: 'chunks/*')

    output:
    tuple val(meta), path("*.cells.parquet")        , emit: cells
    tuple val(meta), path("*.nuclei.geojson*")      , emit: nuclei
    tuple val(meta), path("*_segmentation_mqc.tsv") , emit: mqc
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

    shest merge-cells \\
        ${chunks} \\
        --sample ${prefix} \\
        --outdir . \\
        ${args}
    """

    stub:
    def args   = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: "${meta.id}"
    def suffix = args.contains('--geojson-gzip') ? '.geojson.gz' : '.geojson'
    """
    touch ${prefix}.cells.parquet
    touch ${prefix}.nuclei${suffix}
    touch ${prefix}_segmentation_mqc.tsv
    """
}
