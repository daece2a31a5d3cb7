process MULTIQC {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/environment.yml"
    container "${workflow.containerEngine in ['singularity', 'apptainer'] && !task.ext.singularity_pull_docker_container
        ? 'https://community-cr-prod.seqera.io/docker/registry/v2/blobs/sha256/c8/c8e346f4f6080eadf1253505e6ff09ef004454fc18e8d672006fd7b222cc412e/data'
        : 'community.wave.seqera.io/library/multiqc:1.35--c17fb751507e9dfc'}"

    input:
    tuple val(meta), path(multiqc_files, stageAs: "?/*"), path(multiqc_config, stageAs: "?/*"), path(multiqc_logo), path(replace_names), path(sample_names)

    output:
    tuple val(meta), path("*.html")  , emit: report
    tuple val(meta), path("*_data")  , emit: data
    tuple val(meta), path("*_plots") , emit: plots, optional: true
    // Not sent to the `versions` topic: MultiQC reads that topic, so it would wait on itself.
    tuple val("${task.process}"), val('multiqc'), eval('multiqc --version | sed "s/.* //g"'), emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args        = task.ext.args ?: ''
    // One config file: the pipeline passes assets/multiqc_config.yml or --multiqc_config.
    def config_arg  = multiqc_config ? "--config ${multiqc_config}" : ''
    def name_arg    = task.ext.prefix ? "--filename ${task.ext.prefix}.html" : ''
    def logo_arg    = multiqc_logo ? "--cl-config 'custom_logo: \"${multiqc_logo}\"'" : ''
    def rename_arg  = replace_names ? "--replace-names ${replace_names}" : ''
    def samples_arg = sample_names ? "--sample-names ${sample_names}" : ''
    """
    multiqc \\
        --force \\
        ${args} \\
        ${config_arg} \\
        ${name_arg} \\
        ${logo_arg} \\
        ${rename_arg} \\
        ${samples_arg} \\
        .
    """

    stub:
    """
    mkdir multiqc_data
    touch multiqc_data/.stub
    mkdir multiqc_plots
    touch multiqc_plots/.stub
    touch multiqc_report.html
    """
}
