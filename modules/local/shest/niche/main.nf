process SHEST_NICHE {
    tag "${meta.id}"
    label 'process_medium'

    conda "${moduleDir}/../../../../containers/environment.yml"
    container 'shest:0.1.0'

    input:
    // The slide is optional ([]): when given, the niche map is drawn over its thumbnail.
    tuple val(meta), path(h5ad), path(wsi)

    output:
    tuple val(meta), path("*.niche.h5ad")           , emit: h5ad
    tuple val(meta), path("*.csv")                  , emit: tables
    tuple val(meta), path("*.png")                  , emit: figures
    tuple val(meta), path("*_niche_mqc.tsv")        , emit: mqc
    tuple val(meta), path("*_infiltration_mqc.tsv") , emit: infiltration_mqc
    tuple val("${task.process}"), val('shest'), eval('shest --version | sed "s/^shest //"'), emit: versions_shest, topic: versions
    tuple val("${task.process}"), val('squidpy'), eval('python -c "from importlib.metadata import version; print(version(\'squidpy\'))"'), emit: versions_squidpy, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args      = task.ext.args ?: ''
    def prefix    = task.ext.prefix ?: "${meta.id}"
    def slide_arg = wsi ? "--slide ${wsi}" : ''
    """
    export HOME="\$PWD/.home" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$HOME/matplotlib" NUMBA_CACHE_DIR="\$HOME/numba" HF_HOME="\$HOME/huggingface" TORCH_HOME="\$HOME/torch" CELLPOSE_LOCAL_MODELS_PATH="\$HOME/cellpose"
    mkdir -p "\$MPLCONFIGDIR"

    shest niche \\
        ${h5ad} \\
        --sample ${prefix} \\
        --outdir . \\
        ${slide_arg} \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.niche.h5ad
    touch ${prefix}.niche_summary.csv
    touch ${prefix}.niche_map.png
    touch ${prefix}_niche_mqc.tsv
    touch ${prefix}_infiltration_mqc.tsv
    """
}
