process SHEST_QC {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/../../../../containers/environment.yml"
    container 'shest:0.1.0'

    input:
    tuple val(meta), path(wsi), path(roi)

    output:
    tuple val(meta), path("*.qc.json")        , emit: qc
    tuple val(meta), path("*_qc_mqc.tsv")     , emit: mqc
    tuple val(meta), path("*.thumbnail.png")  , emit: thumbnail
    tuple val(meta), path("*.tissue_mask.png"), emit: tissue_mask
    tuple val(meta), path("*.tissue.geojson") , emit: tissue
    tuple val(meta), path("*.tiles.json")     , emit: plan
    tuple val("${task.process}"), val('shest'), eval('shest --version | sed "s/^shest //"'), emit: versions_shest, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args    = task.ext.args ?: ''
    def prefix  = task.ext.prefix ?: "${meta.id}"
    def mpp_arg = meta.mpp ? "--mpp ${meta.mpp}" : ''
    def roi_arg = roi ? "--roi ${roi}" : ''
    """
    export HOME="\$PWD/.home" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$HOME/matplotlib" NUMBA_CACHE_DIR="\$HOME/numba" HF_HOME="\$HOME/huggingface" TORCH_HOME="\$HOME/torch" CELLPOSE_LOCAL_MODELS_PATH="\$HOME/cellpose"
    mkdir -p "\$MPLCONFIGDIR"

    shest qc \\
        ${wsi} \\
        --sample ${prefix} \\
        --outdir . \\
        ${mpp_arg} \\
        ${roi_arg} \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.qc.json
    touch ${prefix}_qc_mqc.tsv
    touch ${prefix}.thumbnail.png
    touch ${prefix}.tissue_mask.png
    touch ${prefix}.tissue.geojson
    touch ${prefix}.tiles.json
    """
}
